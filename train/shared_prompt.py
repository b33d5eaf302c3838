"""Prompt sharing: score chosen and rejected in ONE sequence ``[prompt | chosen | rejected]``.

The concatenated layout of ``train.logps.PairCollator`` runs the prompt twice (once before
each answer) and pads all 2B rows to the longest prompt + answer. Here each pair is one
segment; a 4D attention mask lets the rejected tokens see the prompt and themselves but not the
chosen tokens, and their position ids restart where the prompt ends, so every answer token gets
exactly the logits it gets after its own prompt. The logit at the prompt's last position
predicts the first token of both answers. On the benchmark's pairs (prompts of ~24 tokens,
answers of ~15) this runs 1.57x fewer token positions through the model, in the reference
pass and in training alike (the "prefix sharing" of Wang et al., 2024, with a dense mask).
The segments of a batch are packed into rows (block-diagonal mask, positions restarting per
segment), so the padding to the longest pair is mostly gone too, and only the positions that
predict an answer token go through the LM head (``logits_to_keep`` with their indices).

The mask is dense (R, 1, T, T): it needs the ``sdpa`` or ``eager`` attention of transformers,
not flash-attention kernels, which take no arbitrary masks (``DPOConfig.share_prompt=False``).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


#: Widest packed row, in tokens (a longer pair gets a row of its own). Attention over a row costs
#: its width squared (the CPU kernels compute every block, masked or not), padding costs the linear
#: layers: with SmolLM2-135M on a batch of 8 pairs (~90 tokens each), rows of up to 192-256 tokens
#: took about 15 % less CPU time per step than one row per pair; one 700-token row gained less.
PACK_TOKENS = 256


def pack_rows(sizes: list[int], capacity: int) -> list[list[int]]:
    """Pair indices grouped into rows of at most ``max(capacity, max(sizes))`` tokens, with the
    fewest padded positions (rows x widest row): for each row count, the longest pair first goes
    to the shortest row so far; one pair per row is the fallback, so packing never adds padding.
    ``capacity <= 0``: one pair per row. Each row lists its pairs in input order."""
    if capacity <= 0 or len(sizes) < 2:
        return [[i] for i in range(len(sizes))]
    capacity = max(capacity, max(sizes))
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    best: tuple[int, list[list[int]]] = (len(sizes) * max(sizes), [[i] for i in range(len(sizes))])
    for n_rows in range(-(-sum(sizes) // capacity), len(sizes)):
        heap = [(0, j) for j in range(n_rows)]
        rows: list[list[int]] = [[] for _ in range(n_rows)]
        for i in order:
            filled, j = heapq.heappop(heap)
            rows[j].append(i)
            heapq.heappush(heap, (filled + sizes[i], j))
        width = max(filled for filled, _ in heap)
        if width <= capacity and n_rows * width < best[0]:
            best = (n_rows * width, [sorted(r) for r in rows])
    return best[1]


@dataclass
class SharedPromptCollator:
    """Batches encoded pairs as ``[prompt | chosen | rejected]`` segments, packed into rows.

    Each pair is one segment ``[prompt | chosen | rejected]``; segments are packed into rows of
    at most ``pack_tokens`` tokens (``pack_rows``; 0: one pair per row), with a block-diagonal
    mask and position ids that restart in every segment, so no pair sees another and the
    padding the 2B-row batch needs (every row as long as the longest) mostly disappears.
    Returns, for R rows of width T: ``input_ids``, ``position_ids`` and ``pair_index`` (the
    pair of each position, -1 on padding) (R, T); ``attention_mask`` (R, 1, T, T) bool, True
    = may attend; ``chosen_targets`` / ``rejected_targets`` (R, T): the token that the logit at
    each position must predict on that answer's path, -100 elsewhere; and, when the examples
    carry them, ``reference_chosen_logps`` / ``reference_rejected_logps`` (B,), in example order.
    """

    pad_token_id: int
    pack_tokens: int = PACK_TOKENS

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sizes = [(len(e["prompt_ids"]), len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples]
        if any(min(s) == 0 for s in sizes):
            raise ValueError("prompt sharing needs a non-empty prompt and non-empty answers in every pair")
        rows = pack_rows([sum(s) for s in sizes], self.pack_tokens)
        n_rows, width = len(rows), max(sum(sum(sizes[i]) for i in row) for row in rows)
        input_ids = torch.full((n_rows, width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((n_rows, width), dtype=torch.long)
        pair_index = torch.full((n_rows, width), -1, dtype=torch.long)
        chosen_targets = torch.full((n_rows, width), IGNORE, dtype=torch.long)
        rejected_targets = torch.full((n_rows, width), IGNORE, dtype=torch.long)
        mask = torch.zeros((n_rows, 1, width, width), dtype=torch.bool)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for k, row in enumerate(rows):
            o = 0  # the segment's offset in its row
            for i in row:
                e, (p, c, r) = examples[i], sizes[i]
                n = p + c + r
                input_ids[k, o:o + n] = torch.tensor(e["prompt_ids"] + e["chosen_ids"] + e["rejected_ids"])
                position_ids[k, o:o + p + c] = torch.arange(p + c)
                position_ids[k, o + p + c:o + n] = torch.arange(p, p + r)
                pair_index[k, o:o + n] = i
                block = mask[k, 0, o:o + n, o:o + n]
                block[:p + c, :p + c] = causal[:p + c, :p + c]  # prompt + chosen: plain causal
                block[p + c:, :p] = True  # rejected sees the prompt ...
                block[p + c:, p + c:] = causal[:r, :r]  # ... and itself, never the chosen tokens
                chosen_targets[k, o + p - 1:o + p + c - 1] = torch.tensor(e["chosen_ids"])
                rejected_targets[k, o + p - 1] = e["rejected_ids"][0]  # the prompt's last logit starts both answers
                rejected_targets[k, o + p + c:o + n - 1] = torch.tensor(e["rejected_ids"][1:])
                o += n
            pad = torch.arange(o, width)
            mask[k, 0, pad, pad] = True  # padding sees itself: an all-masked row would give NaN in SDPA
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
                 "chosen_targets": chosen_targets, "rejected_targets": rejected_targets, "pair_index": pair_index}
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

    Only the positions that predict an answer token get logits: ``logits_to_keep`` takes their
    indices (every row's, so with one packed row exactly those), and the LM head and the
    log-softmax over the vocabulary skip prompt and padding positions; with a 49k vocabulary
    the (positions, V) logits are the largest tensors of the step. The log-softmax runs once
    per position and is gathered for both answers (the prompt's last position scores both);
    per-position log-probs are summed into their pairs by ``pair_index``.
    """
    chosen_t, rejected_t, pair = batch["chosen_targets"], batch["rejected_targets"], batch["pair_index"]
    n_pairs = int(pair.max()) + 1
    scored = (chosen_t != IGNORE) | (rejected_t != IGNORE)
    keep = scored.any(0).nonzero().squeeze(-1)  # (K,) positions scored in some row
    extra = {"logits_to_keep": keep} if logits_to_keep else {}
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=_mask_for(model, batch["attention_mask"]), **extra).logits
    if logits.shape[1] != keep.numel():  # the model returned every position
        logits = logits[:, keep]
    logits = logits.reshape(-1, logits.shape[-1])  # (R * K, V)
    chosen_t, rejected_t, pair, scored = (x[:, keep].reshape(-1) for x in (chosen_t, rejected_t, pair, scored))
    if not scored.all():  # several rows: drop the positions that this row does not score
        logits, chosen_t, rejected_t, pair = logits[scored], chosen_t[scored], rejected_t[scored], pair[scored]
    logps = torch.log_softmax(logits.float(), dim=-1)  # (S, V); .float() copies only below float32
    del logits

    def gather(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = targets != IGNORE
        picked = logps.gather(-1, targets.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1) * valid
        sums = picked.new_zeros(n_pairs).index_add(0, pair, picked)
        return sums, torch.zeros(n_pairs, dtype=torch.long, device=pair.device).index_add(0, pair, valid.long())

    (chosen, chosen_counts), (rejected, rejected_counts) = gather(chosen_t), gather(rejected_t)
    return {
        "policy_chosen_logps": chosen, "policy_rejected_logps": rejected,
        "chosen_counts": chosen_counts, "rejected_counts": rejected_counts,
        "chosen_nll": -chosen / chosen_counts.clamp(min=1),
    }
