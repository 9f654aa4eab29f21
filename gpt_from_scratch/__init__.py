"""gpt_from_scratch: the finished, tested code of the notebook series that builds GPT-2 from scratch.

Read the modules in the order data flows through a GPT::

    tokenizer  text -> token ids             (SimpleTokenizerV1/V2, get_tokenizer)
    data       token ids -> training pairs   (GPTDatasetV1, create_dataloader)
    attention  tokens looking at tokens      (SelfAttention_v1 ... MultiHeadAttention, KVCache)
    model      ids -> logits                 (DummyGPTModel, LayerNorm, GELU, ..., GPTModel)
    llama      the modern architecture       (RMSNorm, apply_rope, SwiGLUFeedForward, GroupedQueryAttention, LlamaModel)
    generate   logits -> next token -> text  (generate_text_simple, generate, text_to_token_ids, ...)
    train      the loss and the simple loop  (calc_loss_batch, train_model_simple, ...)
    fit        the full training loop        (train_model: schedule, clipping, resuming)
    checkpoint save and resume a run         (save_checkpoint, load_checkpoint)
    devices    GPUs, mixed precision, compile (resolve_device, resolve_precision, ...)
    lora       finetune with small adapters (LoRALinear, apply_lora, merge_lora, save_adapter, ...)
    instruct   instruction data: the JSON-extraction task, answer-only labels, exact match
    distributed  several processes: DDP under torchrun

``config`` holds GPT_CONFIG_124M and the other GPT-2 sizes; ``weights`` copies Hugging Face GPT-2
weights into a GPTModel; ``pretrained`` loads OpenAI's GPT-2 from the Hub or a file
(load_pretrained_gpt2); ``llama_weights`` reads GGUF files (llama.cpp) and transformers' Llama weights
into a LlamaModel; ``smollm2`` gives SmolLM2-135M-Instruct, offline once fetched (load_smollm2,
load_smollm2_tokenizer); ``chat`` streams a conversation; ``cli`` is the ``gpt-from-scratch`` command.

The tooling around the lessons (exercise checkers, grading, widgets, the environment doctor) lives in
the subpackage ``gpt_from_scratch.classroom``; importing this package loads none of it, nor
matplotlib or ipywidgets. ``AttentionExplorer`` and ``GenerationPlayground`` are still reachable from
here: they are imported on first use.
"""

from .attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
    causal_mask,
)
from .config import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_TINY,
    GPT_CONFIGS,
    validate_config,
)
from .checkpoint import History, load_checkpoint, read_checkpoint, save_checkpoint
from .data import (GPTDatasetV1, TokenFileDataset, create_dataloader, create_dataloader_v1, load_sample_text,
                   prepare_token_files)
from .generate import generate, generate_text_simple, text_to_token_ids, token_ids_to_text, top_k_filter
from .llama import (
    SMOLLM2_CONFIG_135M,
    GroupedQueryAttention,
    LlamaBlock,
    LlamaModel,
    RMSNorm,
    SwiGLUFeedForward,
    apply_rope,
    apply_rope_interleaved,
    repeat_kv,
    rope_angles,
    validate_llama_config,
)
from .llama_weights import GGUFError, llama_from_hf, load_llama_gguf, load_llama_safetensors, permute_qk, unpermute_qk
from .model import (
    GELU,
    DummyGPTModel,
    DummyLayerNorm,
    DummyTransformerBlock,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    check_token_ids,
    evaluating,
)
from .tokenizer import (
    END_OF_TEXT,
    UNKNOWN,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    get_tokenizer,
    split_text,
)
from .train import (
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    generate_and_print_sample,
    generate_sample,
    perplexity,
    plot_losses,
    train_model_simple,
)
from .fit import lr_at_step, train_model
from .pretrained import load_pretrained_gpt2
from .lora import LoRALinear, apply_lora, count_parameters, load_adapter, merge_lora, save_adapter
from .smollm2 import GGUFTokenizer, load_smollm2, load_smollm2_tokenizer, smollm2_path
from .weights import load_hf_gpt2_weights

__version__ = "0.1.0"

__all__ = [
    "CausalAttention", "KVCache", "MultiHeadAttention", "MultiHeadAttentionWrapper", "SelfAttention_v1",
    "SelfAttention_v2", "causal_mask",
    "GPT_CONFIG_124M", "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GPT_CONFIG_1558M", "GPT_CONFIG_TINY", "GPT_CONFIGS",
    "validate_config",
    "GPTDatasetV1", "create_dataloader", "create_dataloader_v1", "load_sample_text",
    "TokenFileDataset", "prepare_token_files",
    "generate", "generate_text_simple", "text_to_token_ids", "token_ids_to_text", "top_k_filter",
    "load_checkpoint", "read_checkpoint", "save_checkpoint",
    "calc_loss_batch", "calc_loss_loader", "evaluate_model", "generate_and_print_sample", "generate_sample",
    "perplexity", "plot_losses", "train_model_simple",
    "History", "lr_at_step", "train_model",
    "LoRALinear", "apply_lora", "count_parameters", "load_adapter", "merge_lora", "save_adapter",
    "GELU", "DummyGPTModel", "DummyLayerNorm", "DummyTransformerBlock", "FeedForward", "GPTModel",
    "LayerNorm", "TransformerBlock", "check_token_ids", "evaluating",
    "END_OF_TEXT", "UNKNOWN", "SimpleTokenizerV1", "SimpleTokenizerV2", "build_vocab", "get_tokenizer",
    "split_text",
    "load_hf_gpt2_weights", "load_pretrained_gpt2",
    "SMOLLM2_CONFIG_135M", "GroupedQueryAttention", "LlamaBlock", "LlamaModel", "RMSNorm", "SwiGLUFeedForward",
    "apply_rope", "apply_rope_interleaved", "repeat_kv", "rope_angles", "validate_llama_config",
    "GGUFError", "llama_from_hf", "load_llama_gguf", "load_llama_safetensors", "permute_qk", "unpermute_qk",
    "GGUFTokenizer", "load_smollm2", "load_smollm2_tokenizer", "smollm2_path",
    "AttentionExplorer", "GenerationPlayground",
]

# Names that live in the classroom subpackage, imported only when first asked for, so that
# `import gpt_from_scratch` stays free of matplotlib and ipywidgets (PEP 562 module __getattr__).
_LAZY = {"AttentionExplorer": "classroom.widgets", "GenerationPlayground": "classroom.widgets"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
