"""Model configurations: GPT-2's four sizes, and a check that a config is usable.

A config is a plain dict, as in the series, so a learner can print it, copy it and change one key::

    cfg = {**GPT_CONFIG_124M, "n_layers": 2}

Every model class calls :func:`validate_config` in its constructor, so a typo such as ``"n_head"``
fails at once with a message that names the key, instead of deep inside PyTorch.
"""

import difflib

GPT_CONFIG_124M = {
    "vocab_size": 50257,     # GPT-2's BPE vocabulary: 50,000 merges + 256 bytes + <|endoftext|>
    "context_length": 1024,  # the longest sequence the position embedding covers
    "emb_dim": 768,          # width of every token vector inside the model
    "n_heads": 12,           # attention heads per block; emb_dim must divide by it
    "n_layers": 12,          # transformer blocks stacked one after another
    "drop_rate": 0.1,        # dropout probability (only active in train mode)
    "qkv_bias": False,       # bias in the query/key/value projections (GPT-2 itself has one)
}

# The three larger GPT-2 models differ only in width, heads and depth.
GPT_CONFIG_355M = {**GPT_CONFIG_124M, "emb_dim": 1024, "n_heads": 16, "n_layers": 24}
GPT_CONFIG_774M = {**GPT_CONFIG_124M, "emb_dim": 1280, "n_heads": 20, "n_layers": 36}
GPT_CONFIG_1558M = {**GPT_CONFIG_124M, "emb_dim": 1600, "n_heads": 25, "n_layers": 48}

# Small enough to train on a laptop CPU in seconds to minutes, with GPT-2's tokenizer: most of its
# 6.6M parameters are the token embedding and output head (50257 x 64 each).
GPT_CONFIG_TINY = {**GPT_CONFIG_124M, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2}

# GPT-2's four sizes, the one table of them: the book's names (as the notebooks print them) -> config.
# The CLI (--model 124M) and the weight loader ("gpt2", "124M", "openai-community/gpt2") read their
# names off these keys with gpt2_names.
GPT_CONFIGS = {
    "gpt2-small (124M)": GPT_CONFIG_124M,
    "gpt2-medium (355M)": GPT_CONFIG_355M,
    "gpt2-large (774M)": GPT_CONFIG_774M,
    "gpt2-xl (1558M)": GPT_CONFIG_1558M,
}


def gpt2_names(book_name):
    """``"gpt2-medium (355M)"`` -> ``("355M", "gpt2-medium")``: the series' short name and the Hugging
    Face Hub's (whose repository is ``openai-community/<name>``; the smallest is plain ``"gpt2"``)."""
    hub_name, size = book_name.removesuffix(")").split(" (")
    return size, hub_name.replace("gpt2-small", "gpt2")

# key -> (expected type, description of the allowed values)
_SCHEMA = {
    "vocab_size": (int, "a positive integer"),
    "context_length": (int, "a positive integer"),
    "emb_dim": (int, "a positive integer"),
    "n_heads": (int, "a positive integer"),
    "n_layers": (int, "a non-negative integer"),
    "drop_rate": (float, "a number in [0, 1)"),
    "qkv_bias": (bool, "True or False"),
}


def validate_config(cfg):
    """Check that ``cfg`` has exactly GPT_CONFIG_124M's keys, with sensible types and values.

    Returns ``cfg`` unchanged so it can be used inline. Raises:

    - ``TypeError`` if ``cfg`` is not a dict or a value has the wrong type (``"768"``, ``12.0``, ``1``
      for a bool);
    - ``KeyError`` if a key is missing;
    - ``ValueError`` if a key is unknown (with the closest known key as a hint), a value is out of
      range, or ``emb_dim`` is not divisible by ``n_heads``.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"config must be a dict like GPT_CONFIG_124M, got {type(cfg).__name__}")

    unknown = [k for k in cfg if k not in _SCHEMA]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), _SCHEMA, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown config key(s): {', '.join(hints)}; known keys: {', '.join(_SCHEMA)}")

    missing = [k for k in _SCHEMA if k not in cfg]
    if missing:
        raise KeyError(f"config is missing key(s): {', '.join(map(repr, missing))}")

    for key, (kind, allowed) in _SCHEMA.items():
        value = cfg[key]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, bool)
        if not ok:
            raise TypeError(f"config[{key!r}] must be {allowed}, got {value!r} ({type(value).__name__})")

    for key in ("vocab_size", "context_length", "emb_dim", "n_heads"):
        if cfg[key] < 1:
            raise ValueError(f"config[{key!r}] must be a positive integer, got {cfg[key]}")
    if cfg["n_layers"] < 0:
        raise ValueError(f"config['n_layers'] must be >= 0, got {cfg['n_layers']}")
    if not 0 <= cfg["drop_rate"] < 1:
        raise ValueError(f"config['drop_rate'] must be in [0, 1), got {cfg['drop_rate']}")
    if cfg["emb_dim"] % cfg["n_heads"] != 0:
        raise ValueError(
            f"config['emb_dim'] = {cfg['emb_dim']} must be divisible by config['n_heads'] = "
            f"{cfg['n_heads']}: each head gets emb_dim / n_heads dimensions"
        )
    return cfg
