"""Prompt sharing: score chosen and rejected in ONE sequence ``[prompt | chosen | rejected]``.

The concatenated layout of ``train.logps.PairCollator`` runs the prompt twice (once before
each answer) and pads all 2B rows to the longest prompt + answer. Here each pair is one row;
a 4D attention mask lets the rejected tokens see the prompt and themselves but not the chosen
tokens, and their position ids restart where the prompt ends, so every answer token gets
exactly the logits it gets after its own prompt. The logit at the prompt's last position
predicts the first token of both answers. On the benchmark's pairs (prompts of ~24 tokens,
answers of ~15) this runs 1.57x fewer token positions through the model, in the reference
pass and in training alike (the "prefix sharing" of Wang et al., 2024, with a dense mask).

The mask is dense (B, 1, T, T): it needs the ``sdpa`` or ``eager`` attention of transformers,
not flash-attention kernels, which take no arbitrary masks (``DPOConfig.share_prompt=False``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass
class SharedPromptCollator:
    """Batches encoded pairs as one ``[prompt | chosen | rejected | pad]`` row per pair.

    Returns, for B pairs and width T = the longest prompt + chosen + rejected:
    ``input_ids`` and ``position_ids`` (B, T); ``attention_mask`` (B, 1, T, T) bool, True =
    may attend; ``chosen_targets`` / ``rejected_targets`` (B, T): the token that the logit at
    each position must predict on that answer's path, -100 elsewhere; and, when the examples
    carry them, ``reference_chosen_logps`` / ``reference_rejected_logps`` (B,).
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sizes = [(len(e["prompt_ids"]), len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples]
        if any(min(s) == 0 for s in sizes):
            raise ValueError("prompt sharing needs a non-empty prompt and non-empty answers in every pair")
        n_rows, width = len(examples), max(sum(s) for s in sizes)
        input_ids = torch.full((n_rows, width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((n_rows, width), dtype=torch.long)
        chosen_targets = torch.full((n_rows, width), IGNORE, dtype=torch.long)
        rejected_targets = torch.full((n_rows, width), IGNORE, dtype=torch.long)
        mask = torch.zeros((n_rows, 1, width, width), dtype=torch.bool)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for i, (e, (p, c, r)) in enumerate(zip(examples, sizes)):
            n = p + c + r
            input_ids[i, :n] = torch.tensor(e["prompt_ids"] + e["chosen_ids"] + e["rejected_ids"])
            position_ids[i, :p + c] = torch.arange(p + c)
            position_ids[i, p + c:n] = torch.arange(p, p + r)
            rows = mask[i, 0]
            rows[:p + c, :p + c] = causal[:p + c, :p + c]  # prompt + chosen: plain causal
            rows[p + c:n, :p] = True  # rejected sees the prompt ...
            rows[p + c:n, p + c:n] = causal[:r, :r]  # ... and itself, never the chosen tokens
            pad = torch.arange(n, width)
            rows[pad, pad] = True  # padding sees itself: an all-masked row would give NaN in SDPA
            chosen_targets[i, p - 1:p + c - 1] = torch.tensor(e["chosen_ids"])
            rejected_targets[i, p - 1] = e["rejected_ids"][0]  # the prompt's last logit starts both answers
            rejected_targets[i, p + c:n - 1] = torch.tensor(e["rejected_ids"][1:])
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
                 "chosen_targets": chosen_targets, "rejected_targets": rejected_targets}
        for key in ("reference_chosen_logps", "reference_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return batch


def _mask_for(model, mask: torch.Tensor) -> torch.Tensor:
    """The bool mask as the model's attention wants it: SDPA takes bool, eager adds a float mask."""
    config = getattr(getattr(model, "module", model), "config", None)
    impl = getattr(config, "_attn_implementation", "sdpa") or "sdpa"
    if impl == "sdpa":
        return mask
    if impl != "eager":
        raise ValueError(f"prompt sharing needs a dense 4D attention mask, which {impl!r} attention does not take; "
                         "load the model with attn_implementation='sdpa' or set share_prompt=False")
    dtype = next(getattr(model, "module", model).parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def shared_prompt_logps(model, batch: dict[str, torch.Tensor], logits_to_keep: bool = True) -> dict[str, torch.Tensor]:
    """One forward over a ``SharedPromptCollator`` batch -> the (B,) tensors of ``concatenated_logps``.

    Only positions from the earliest prompt end on get logits (``logits_to_keep``): the LM
    head and the log-softmax skip the prompt positions. The log-softmax over the vocabulary
    is computed once and gathered for both answers.
    """
    chosen_t, rejected_t = batch["chosen_targets"], batch["rejected_targets"]
    scored = (chosen_t != IGNORE) | (rejected_t != IGNORE)
    keep = chosen_t.shape[1] - int(scored.float().argmax(-1).min())
    extra = {"logits_to_keep": keep} if logits_to_keep else {}
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=_mask_for(model, batch["attention_mask"]), **extra).logits
    chosen_t, rejected_t = chosen_t[:, -logits.shape[1]:], rejected_t[:, -logits.shape[1]:]
    logps = torch.log_softmax(logits.float(), dim=-1)  # (B, K, V)

    def gather(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = targets != IGNORE
        picked = logps.gather(-1, targets.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1)
        return (picked * valid).sum(-1), valid.sum(-1)

    (chosen, chosen_counts), (rejected, rejected_counts) = gather(chosen_t), gather(rejected_t)
    return {
        "policy_chosen_logps": chosen, "policy_rejected_logps": rejected,
        "chosen_counts": chosen_counts, "rejected_counts": rejected_counts,
        "chosen_nll": -chosen / chosen_counts.clamp(min=1),
    }
