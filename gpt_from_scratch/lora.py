"""LoRA: finetune a big model by training two small matrices beside each frozen weight.

A linear layer computes ``y = x W^T + b`` with ``W`` of shape ``(d_out, d_in)``. Finetuning all of
``W`` means a gradient and two AdamW moments for every one of its numbers. LoRA (Hu et al., 2021)
freezes ``W`` and learns a low-rank change instead::

    y = x W^T + b  +  (dropout(x) A^T B^T) * alpha / rank
        frozen         A: (rank, d_in), B: (d_out, rank), trained

``rank`` is small (4, 8, 16), so ``A`` and ``B`` hold ``rank * (d_in + d_out)`` numbers instead of
``d_in * d_out``. ``B`` starts at zero, so the wrapped model starts *exactly* equal to the base model
and training moves it away gently; ``A`` starts small and random (Kaiming-uniform, as PyTorch
initialises ``nn.Linear`` and as the ``peft`` library does), otherwise both gradients would be zero
forever. ``alpha / rank`` scales the update so that changing the rank keeps the step the same
learning rate takes roughly the same size.

    LoRALinear            one wrapped ``nn.Linear``; ``merge()`` folds ``B A * scale`` into ``W``
    apply_lora            wrap the chosen linear layers of any model, by name, freeze everything else
    merge_lora            replace every ``LoRALinear`` of a model by its merged ``nn.Linear``
    count_parameters      (trainable, total)
    save_adapter / load_adapter   only ``A`` and ``B`` (a few MB, where the model takes hundreds),
                                  refusing a model whose layer names or shapes differ
"""

import math
import os
import re

import torch
import torch.nn as nn

from . import checks

ADAPTER_FORMAT = "gpt-from-scratch-lora-1"


class LoRALinear(nn.Module):
    """``linear(x) + (dropout(x) @ A.T @ B.T) * alpha / rank``, with ``linear`` frozen.

    ``x``: ``(..., d_in)`` -> ``(..., d_out)``. ``A``: ``(rank, d_in)``, ``B``: ``(d_out, rank)``;
    these two are the only trainable parameters. The names match ``peft``'s ``lora_A.weight`` and
    ``lora_B.weight`` (same shapes, same formula), which the tests use to compare the two.
    """

    def __init__(self, linear, rank, alpha, dropout=0.0):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        checks.positive_int("rank", rank)
        checks.number("alpha", alpha, low=0, low_open=True)
        checks.number("dropout", dropout, low=0, high=1, high_open=True)
        self.linear = linear
        for p in self.linear.parameters():
            p.requires_grad_(False)  # the pretrained weight and bias stay as they are
        d_out, d_in = linear.weight.shape
        w = linear.weight
        self.A = nn.Parameter(torch.empty(rank, d_in, dtype=w.dtype, device=w.device))
        self.B = nn.Parameter(torch.zeros(d_out, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's own init: uniform(+-1/sqrt(d_in))
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.train(linear.training)  # a layer of a model in eval mode stays in eval mode: no dropout there

    @property
    def weight(self):
        """The frozen base weight ``(d_out, d_in)``, for code that reads a layer's weight (its dtype,
        device or shape, e.g. to allocate a KV cache); the adapter is not in it until :meth:`merge`."""
        return self.linear.weight

    @property
    def bias(self):
        return self.linear.bias

    def forward(self, x):
        # Two thin matrix products, never the (d_out, d_in) matrix B @ A: (.., d_in) -> (.., rank) -> (.., d_out)
        return self.linear(x) + (self.dropout(x) @ self.A.T @ self.B.T) * self.scale

    @torch.no_grad()
    def merge(self):
        """A plain ``nn.Linear`` with weight ``W + B @ A * scale``: the same outputs (dropout off), no extra cost."""
        d_out, d_in = self.linear.weight.shape
        merged = nn.Linear(d_in, d_out, bias=self.linear.bias is not None,
                           device=self.linear.weight.device, dtype=self.linear.weight.dtype)
        merged.weight.copy_(self.linear.weight + self.B @ self.A * self.scale)
        if self.linear.bias is not None:
            merged.bias.copy_(self.linear.bias)
        return merged.requires_grad_(False).train(self.training)  # frozen, like the base weight it replaces

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, scale={self.scale:g}"


def _block_index(name):
    """The first integer in a dotted module name (``trf_blocks.3.att.W_query`` -> 3), or None."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(match.group(1)) if match else None


def _set_submodule(model, name, module):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(model, targets, rank, alpha, dropout=0.0, blocks=None):
    """Freeze every parameter of ``model``, then wrap its chosen ``nn.Linear`` layers in ``LoRALinear``.

    ``targets``: names of the layers to adapt, matched against the last part of each module's dotted
    name: ``("W_query", "W_value")`` for ``GPTModel`` and ``LlamaModel`` (``("q_proj", "v_proj")`` for
    transformers' Llama). ``blocks``:
    ``None`` (all) or the block indices to adapt (the first number in the module's name, e.g. the
    ``3`` of ``trf_blocks.3.att.W_query``): adapting only the upper blocks lets the backward pass
    stop there. Returns the list of wrapped names, in model order. Modifies ``model`` in place.
    """
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty list of layer names such as ('W_query', 'W_value'), got {targets!r}")
    if blocks is not None:
        if isinstance(blocks, int) or not hasattr(blocks, "__iter__"):
            raise TypeError(f"blocks must be None or a collection of block indices such as range(18, 30), "
                            f"got {blocks!r}")
        blocks = set(blocks)
        for b in blocks:
            checks.non_negative_int("blocks (each index)", b)
    if lora_layers(model):
        raise ValueError("the model already has LoRA layers: wrap a model once (merge_lora or load_adapter "
                         "work on a wrapped model), or start again from the base model")
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets
              and (blocks is None or _block_index(name) in blocks)]
    if not chosen:
        linear_names = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear layer matches targets={list(targets)}"
                         + (f" in blocks {sorted(blocks)}" if blocks is not None else "")
                         + f"; this model's linear layers are named {linear_names}")
    for name in chosen:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), rank, alpha, dropout))
    return chosen


def lora_layers(model):
    """``{name: LoRALinear}`` for every wrapped layer of ``model``, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model):
    """Replace every ``LoRALinear`` of ``model`` by its merged ``nn.Linear`` (in place); returns ``model``."""
    for name, layer in lora_layers(model).items():
        _set_submodule(model, name, layer.merge())
    return model


def count_parameters(model):
    """``(trainable, total)`` numbers of parameters; a tied weight counts once."""
    params = list({id(p): p for p in model.parameters()}.values())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_adapter(model, path):
    """Save only the adapter: each wrapped layer's ``A`` and ``B``, its base weight's shape, rank and
    alpha. Returns the file's size in bytes (a few megabytes for
    SmolLM2, where its float32 weights take hundreds)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save: call apply_lora(model, ...) first")
    adapter = {
        "format": ADAPTER_FORMAT,
        "layers": {name: {"base_shape": list(m.linear.weight.shape), "rank": m.rank, "alpha": m.alpha,
                          "A": m.A.detach().cpu().clone(), "B": m.B.detach().cpu().clone()}
                   for name, m in layers.items()},
    }
    torch.save(adapter, path)
    return os.path.getsize(path)


def load_adapter(model, path):
    """Load an adapter saved by ``save_adapter`` into ``model`` (in place; returns ``model``).

    ``model`` is either the base model (its layers are wrapped here, everything else frozen) or one
    already wrapped with the same layers. Raises ``ValueError``, naming the first difference, when the
    adapter does not fit the model: a layer it names is missing or is not a linear layer, a base weight
    has another shape, or the model has LoRA layers the adapter does not have. Only names and shapes
    are compared: an adapter trained on another model of the same shapes (say, the base model rather
    than the Instruct one) loads without complaint and means nothing there.
    """
    adapter = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(adapter, dict) or adapter.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not a LoRA adapter saved by save_adapter (format {ADAPTER_FORMAT!r})")
    saved = adapter["layers"]
    modules = dict(model.named_modules())
    for name, entry in saved.items():
        module = modules.get(name)
        base = module.linear if isinstance(module, LoRALinear) else module
        if not isinstance(base, nn.Linear):
            raise ValueError(f"the adapter was made for another model: it adapts layer {name!r}, which this model "
                             + ("does not have" if module is None else f"has as a {type(module).__name__}, not a linear layer"))
        if list(base.weight.shape) != entry["base_shape"]:
            raise ValueError(f"the adapter was made for another model: layer {name!r} has weight shape "
                             f"{tuple(base.weight.shape)} here, {tuple(entry['base_shape'])} in the adapter")
        if isinstance(module, LoRALinear) and module.rank != entry["rank"]:
            raise ValueError(f"layer {name!r} is wrapped with rank {module.rank}, the adapter has rank {entry['rank']}")
    extra = sorted(set(lora_layers(model)) - set(saved))
    if extra:
        raise ValueError(f"the model has LoRA layers the adapter does not have, e.g. {extra[0]!r}: "
                         "load it into the base model or one wrapped with the same layers")
    if not lora_layers(model):
        for p in model.parameters():
            p.requires_grad_(False)
    with torch.no_grad():
        for name, entry in saved.items():
            module = model.get_submodule(name)
            if not isinstance(module, LoRALinear):
                module = LoRALinear(module, entry["rank"], entry["alpha"])
                _set_submodule(model, name, module)
            module.A.copy_(entry["A"])
            module.B.copy_(entry["B"])
            module.alpha, module.scale = entry["alpha"], entry["alpha"] / entry["rank"]
    return model
