"""gpt_from_scratch: the finished, tested code of the notebook series that builds GPT-2 from scratch.

Read the modules in the order data flows through a GPT::

    tokenizer  text -> token ids             (SimpleTokenizerV1/V2, get_tokenizer)
    data       token ids -> training pairs   (GPTDatasetV1, create_dataloader)
    attention  tokens looking at tokens      (SelfAttention_v1 ... MultiHeadAttention)
    model      ids -> logits                 (DummyGPTModel, LayerNorm, GELU, ..., GPTModel)
    generate   logits -> next token -> text  (generate_text_simple, text_to_token_ids, ...)

``config`` holds GPT_CONFIG_124M and the other GPT-2 sizes; ``weights`` copies Hugging Face GPT-2
weights into a GPTModel.
"""

from .attention import (
    CausalAttention,
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
    GPT_CONFIGS,
    validate_config,
)
from .data import GPTDatasetV1, create_dataloader, create_dataloader_v1, load_sample_text
from .generate import generate_text_simple, text_to_token_ids, token_ids_to_text
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
from .weights import load_hf_gpt2_weights

__version__ = "0.1.0"

__all__ = [
    "CausalAttention", "MultiHeadAttention", "MultiHeadAttentionWrapper", "SelfAttention_v1",
    "SelfAttention_v2", "causal_mask",
    "GPT_CONFIG_124M", "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GPT_CONFIG_1558M", "GPT_CONFIGS",
    "validate_config",
    "GPTDatasetV1", "create_dataloader", "create_dataloader_v1", "load_sample_text",
    "generate_text_simple", "text_to_token_ids", "token_ids_to_text",
    "GELU", "DummyGPTModel", "DummyLayerNorm", "DummyTransformerBlock", "FeedForward", "GPTModel",
    "LayerNorm", "TransformerBlock", "check_token_ids",
    "END_OF_TEXT", "UNKNOWN", "SimpleTokenizerV1", "SimpleTokenizerV2", "build_vocab", "get_tokenizer",
    "split_text",
    "load_hf_gpt2_weights",
]
