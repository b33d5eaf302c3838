"""The embedded default policy: a tiny Llama built from scratch, no download.

A byte-level BPE tokenizer (tokenizers) is trained on the shipped corpus, a small
``LlamaConfig`` model is initialised from a seed, and both are saved in the standard
Hugging Face layout with a chat template, so transformers and vLLM load the directory
like any hub model. ``train.sft`` then fine-tunes it on the corpus (``init_policy``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, EOS = "<|pad|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [PAD, EOS, *ROLE_TOKENS]

#: One message per block: ``<|role|>\ncontent<|end|>\n``; generation starts after ``<|assistant|>\n``.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class PolicyConfig:
    """Shape of the tiny from-scratch policy."""

    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary size, special tokens included"})
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    num_layers: int = field(default=2, metadata={"help": "transformer blocks"})
    num_heads: int = field(default=2, metadata={"help": "attention heads (head dim = hidden/heads; 64 suits vLLM's CPU kernels)"})
    intermediate_size: int = field(default=512, metadata={"help": "MLP width"})
    max_position: int = field(default=256, metadata={"help": "context window in tokens"})
    seed: int = field(default=0, metadata={"help": "seed of the weight initialisation"})


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (deterministic for a fixed list) with our specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    fast.add_special_tokens({"additional_special_tokens": list(ROLE_TOKENS)})
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 10**6  # the model config carries the real window
    return fast


def build_random_policy(out_dir: str | Path, texts: list[str], cfg: PolicyConfig | None = None) -> Path:
    """Save a randomly initialised tiny Llama and its tokenizer to ``out_dir``; return it."""
    cfg = cfg or PolicyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts, cfg.vocab_size)
    eos, pad = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position, tie_word_embeddings=True,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=pad, torch_dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=eos)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "prefwork_policy.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out
