"""Tokenised preference pairs, their collator, and per-sequence answer log-probs.

A pair becomes ``prompt_ids`` (the prompt rendered with the tokenizer's chat template,
generation prompt added: the exact prefix the sampler used) and ``chosen_ids`` /
``rejected_ids`` (answer text + eos). The collator stacks chosen rows then rejected rows
into one right-padded batch of 2B sequences, with prompt and padding labels set to -100,
so one forward pass scores both answers. Reference log-probs are computed here once,
without gradients, and stored next to the pairs: no reference model is held while training.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from prefwork.pipeline.chat import render_prompt
from prefwork.train.shared_prompt import IGNORE, shared_prompt_logps


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; answers must end with one")
    return tokenizer.eos_token_id


def encode_pair(tokenizer, prompt: str, chosen: str, rejected: str, max_length: int) -> dict[str, list[int]]:
    """Token ids of one pair: ``prompt_ids``, ``chosen_ids``, ``rejected_ids``.

    ``prompt`` is plain text (one user turn) or a JSON list of messages. When prompt +
    answer exceeds ``max_length``, the prompt keeps its end (at most what leaves the longer
    answer min(len, max_length // 2) tokens), then each answer is cut at its end; both
    answers share the same prompt tokens.
    """
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt_ids = ids(render_prompt(tokenizer, prompt))
    chosen_ids = ids(chosen) + [_eos_id(tokenizer)]
    rejected_ids = ids(rejected) + [_eos_id(tokenizer)]
    longest = max(len(chosen_ids), len(rejected_ids))
    if len(prompt_ids) + longest > max_length:
        keep = max_length - min(longest, max_length // 2)
        prompt_ids = prompt_ids[len(prompt_ids) - keep:] if len(prompt_ids) > keep else prompt_ids
        room = max_length - len(prompt_ids)
        chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


@dataclass
class PairCollator:
    """Batches encoded pairs for one concatenated forward.

    Returns ``input_ids``, ``attention_mask``, ``labels`` of shape (2B, T) (rows 0..B-1 are
    chosen, B..2B-1 rejected; labels are -100 on prompt and padding) and, when the examples
    carry them, ``reference_chosen_logps`` / ``reference_rejected_logps`` of shape (B,).
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [(e["prompt_ids"], e[f"{side}_ids"]) for side in ("chosen", "rejected") for e in examples]
        width = max(len(p) + len(a) for p, a in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, answer) in enumerate(rows):
            n = len(prompt) + len(answer)
            input_ids[i, :n] = torch.tensor(prompt + answer, dtype=torch.long)
            labels[i, len(prompt):n] = torch.tensor(answer, dtype=torch.long)
            attention_mask[i, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        for key in ("reference_chosen_logps", "reference_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return batch


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the labelled tokens and their count, per row.

    logits (N, T, V), labels (N, T) with -100 where not scored -> (sums (N,), counts (N,)).
    Token t is predicted from position t-1; the computation runs in float32. Only the scored
    positions' logits go through the log-softmax (an (S, V) copy, S = scored tokens, instead of
    a second (N, T, V) tensor), and the float32 cast applies to those alone.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)[mask]
    token_logps = -F.cross_entropy(logits[mask].float(), labels[mask], reduction="none")  # (S,)
    sums = token_logps.new_zeros(labels.shape[0]).index_add(0, rows, token_logps)
    return sums, mask.sum(-1)


def answer_window(labels: torch.Tensor) -> int:
    """How many trailing positions' logits score every answer token of ``labels`` (N, T).

    The logit at position t predicts token t+1, so the window starts one before the earliest
    answer token of any row. The LM head and the log-softmax over the vocabulary then skip
    the prompt positions every row shares (with 2B rows, most of a prompt's length).
    """
    scored = labels != IGNORE
    if not scored.any():
        return labels.shape[1]
    first = int(scored.float().argmax(-1)[scored.any(-1)].min())
    return min(labels.shape[1], labels.shape[1] - first + 1)


def _takes_logits_to_keep(model) -> bool:
    """Whether the (possibly wrapped) model's forward accepts ``logits_to_keep`` (transformers' causal LMs do).

    DDP's forward and a peft model's take ``**kwargs`` and pass them on: the wrapped model's signature decides.
    """
    model = getattr(model, "module", model)
    return _forward_takes_logits_to_keep(type(model.get_base_model() if hasattr(model, "get_base_model") else model))


@functools.lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(cls: type) -> bool:
    """Per model class, once: the signature is read outside the training step's hot path."""
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def concatenated_logps(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward over the 2B rows of a collated batch; split back into chosen and rejected.

    Returns (B,) tensors: ``policy_chosen_logps`` / ``policy_rejected_logps`` (sums, with
    grad when the model is in a grad context), ``chosen_counts`` / ``rejected_counts``
    (answer tokens), and ``chosen_nll`` (the chosen answer's mean per-token NLL). A batch of
    ``train.shared_prompt.SharedPromptCollator`` (one row per pair) is scored by its own path.
    """
    if "chosen_targets" in batch:
        return shared_prompt_logps(model, batch, logits_to_keep=_takes_logits_to_keep(model))
    labels, keep = batch["labels"], answer_window(batch["labels"])
    extra = {"logits_to_keep": keep} if keep < labels.shape[1] and _takes_logits_to_keep(model) else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
    sums, counts = sequence_logps(logits, labels[:, labels.shape[1] - logits.shape[1]:])
    chosen, rejected = sums.chunk(2)
    chosen_counts, rejected_counts = counts.chunk(2)
    return {
        "policy_chosen_logps": chosen, "policy_rejected_logps": rejected,
        "chosen_counts": chosen_counts, "rejected_counts": rejected_counts,
        "chosen_nll": -chosen / chosen_counts.clamp(min=1),
    }


@torch.no_grad()
def compute_reference_logps(model, examples: list[dict[str, Any]], collator: PairCollator,
                            batch_size: int = 8) -> tuple[list[float], list[float]]:
    """Summed answer log-probs of ``model`` for every encoded pair, in order (no grad, eval mode).

    Returns (reference_chosen_logps, reference_rejected_logps), one float per pair.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    for start in range(0, len(examples), batch_size):
        batch = collator(examples[start:start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = concatenated_logps(model, batch)
        chosen += out["policy_chosen_logps"].tolist()
        rejected += out["policy_rejected_logps"].tolist()
    model.train(was_training)
    return chosen, rejected


def encode_pairs(tokenizer, rows: Iterable[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """``encode_pair`` over rows with ``prompt``, ``chosen``, ``rejected`` keys."""
    return [encode_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"], max_length) for r in rows]
