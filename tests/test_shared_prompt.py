"""Prompt sharing (train/shared_prompt.py): one [prompt | chosen | rejected] row per pair must
score exactly what the 2B-row concatenated batch scores, values and gradients."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefwork.train.logps import PairCollator, concatenated_logps, encode_pairs
from prefwork.train.policy import PolicyConfig, build_random_policy
from prefwork.train.shared_prompt import SharedPromptCollator, _mask_for, pack_rows

KEYS = ("policy_chosen_logps", "policy_rejected_logps", "chosen_counts", "rejected_counts", "chosen_nll")


def rows() -> list[dict]:
    """Pairs whose prompts and answers differ in length, so both layouts pad differently."""
    topics = ["rain", "tea", "maps", "bees", "salt", "kites"]
    return [{"prompt": f"Tell me about {t}." + " Please be brief." * (i % 3),
             "chosen": f"Here is a note about {t}: " + "it is lovely. " * (1 + i % 2),
             "rejected": "no" if i % 2 else f"{t} {t} {t} is a thing, I think, maybe, or not."}
            for i, t in enumerate(topics)]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    texts = [r[k] for r in rows() for k in ("prompt", "chosen", "rejected")] * 4
    cfg = PolicyConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    path = build_random_policy(tmp_path_factory.mktemp("policy"), texts, cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return path, tokenizer, encode_pairs(tokenizer, rows(), 96)


def test_collator_layout(policy):
    """Rejected tokens see the prompt and themselves, never chosen; positions restart after the prompt."""
    _, tokenizer, examples = policy
    e = examples[0]
    p, c, r = len(e["prompt_ids"]), len(e["chosen_ids"]), len(e["rejected_ids"])
    batch = SharedPromptCollator(tokenizer.pad_token_id, pack_tokens=0)(examples)
    assert batch["input_ids"].shape[0] == len(examples) and batch["attention_mask"].dtype == torch.bool
    assert batch["input_ids"][0, :p + c + r].tolist() == e["prompt_ids"] + e["chosen_ids"] + e["rejected_ids"]
    assert batch["position_ids"][0, p + c:p + c + r].tolist() == list(range(p, p + r))
    mask = batch["attention_mask"][0, 0]
    assert mask[p + c, :p].all() and not mask[p + c, p:p + c].any() and mask[p + c, p + c]
    assert mask[p + c - 1, :p + c].all() and not mask[p + c - 1, p + c:].any()  # chosen is plain causal
    assert batch["chosen_targets"][0, p - 1] == e["chosen_ids"][0]
    assert batch["rejected_targets"][0, p - 1] == e["rejected_ids"][0]
    assert batch["rejected_targets"][0, p + c:p + c + r - 1].tolist() == e["rejected_ids"][1:]
    assert (batch["chosen_targets"] != -100).sum(-1).tolist() == [len(x["chosen_ids"]) for x in examples]
    assert mask.any(-1).all()  # no all-masked query row (SDPA would give NaN)


def test_packed_rows_keep_pairs_apart():
    """Segments share a row without seeing each other; each pair's positions restart at 0."""
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 3], [1, 2]] and pack_rows([5, 3], 0) == [[0], [1]]
    assert pack_rows([9, 3], 4) == [[0], [1]]  # a pair longer than the capacity gets its own row
    examples = [{"prompt_ids": [5, 6], "chosen_ids": [7, 1], "rejected_ids": [8, 9, 1]},
                {"prompt_ids": [5], "chosen_ids": [7], "rejected_ids": [1]}]
    batch = SharedPromptCollator(0, pack_tokens=64)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 8, 9, 1, 5, 7, 1]]
    assert batch["pair_index"].tolist() == [[0] * 7 + [1] * 3]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4, 0, 1, 1]]
    mask = batch["attention_mask"][0, 0]
    assert not mask[7:, :7].any() and not mask[:7, 7:].any()  # block-diagonal
    assert mask[8, 7] and not mask[9, 8] and mask[9, 7]  # pair 1: rejected sees its prompt, not its chosen
    assert batch["chosen_targets"][0, 6] == -100 and batch["chosen_targets"][0, 7] == 7
    assert batch["rejected_targets"][0, 7] == 1 and batch["rejected_targets"][0, 1] == 8


@pytest.mark.parametrize("attention,pack_tokens", [("sdpa", 0), ("eager", 0), ("sdpa", 128), ("eager", 128),
                                                   ("sdpa", 1024)])
def test_scores_and_gradients_match_the_concatenated_batch(policy, attention, pack_tokens):
    path, tokenizer, examples = policy
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention)
    results = []
    shared = SharedPromptCollator(tokenizer.pad_token_id, pack_tokens=pack_tokens)
    rows = shared(examples)["input_ids"].shape[0]
    assert rows == (len(examples) if pack_tokens == 0 else 1 if pack_tokens == 1024 else rows)
    assert 1 < rows < len(examples) or pack_tokens != 128  # 128 packs some pairs, not all
    for collator in (PairCollator(tokenizer.pad_token_id), shared):
        model.zero_grad()
        out = concatenated_logps(model, collator(examples))
        (out["policy_chosen_logps"] - 0.5 * out["policy_rejected_logps"]).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append(({k: out[k].detach() for k in KEYS}, grads))
    (want, want_grad), (got, got_grad) = results
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-4, msg=key)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)


def test_flash_attention_is_refused_with_a_clear_error(policy):
    path, _, _ = policy
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="share_prompt=False"):
        _mask_for(model, torch.ones((1, 1, 2, 2), dtype=torch.bool))
