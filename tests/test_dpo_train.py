"""The preference trainer on a tiny random Llama: tokenisation, reference pass, every loss,
the sDPO schedule and resume (train/logps.py, train/dpo.py, train/sdpo.py)."""
from __future__ import annotations

import json
import logging
import shutil

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefwork.train.dpo import DPOConfig, train_dpo
from prefwork.pipeline.run import read_metrics
from prefwork.train.dpo_monitor import LikelihoodMonitor
from prefwork.train.logps import IGNORE, PairCollator, concatenated_logps, encode_pair, encode_pairs
from prefwork.train.losses import LOSSES
from prefwork.train.policy import PolicyConfig, build_random_policy
from prefwork.train.sdpo import step_dir, train_sdpo

torch.set_num_threads(1)
TOPICS = ["rain", "tea", "maps", "bees", "salt", "kites", "owls", "jazz", "moss", "glass", "wind", "rust",
          "snow", "clay", "ink", "fog"]


def make_pairs(n: int = 32) -> pl.DataFrame:
    """n synthetic pairs: a polite chosen answer and a terse rejected one per prompt."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({
            "prompt_id": f"p{i}", "prompt": f"Tell me about {topic} ({i}).",
            "chosen": f"Here is a short note about {topic}: it is lovely.", "rejected": f"no {topic} lol",
            "chosen_id": 0, "rejected_id": 1, "chosen_score": 5.0, "rejected_score": 1.0, "margin": 4.0,
        })
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A tiny random Llama (2 layers, width 64) with a byte-level BPE tokenizer and chat template."""
    pairs = make_pairs()
    texts = [t for col in ("prompt", "chosen", "rejected") for t in pairs[col]] * 4
    cfg = PolicyConfig(vocab_size=400, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    return build_random_policy(tmp_path_factory.mktemp("policy"), texts, cfg)


def tiny_cfg(**overrides) -> DPOConfig:
    base = dict(batch_size=16, grad_accum=2, max_steps=4, logging_steps=1, eval_fraction=0.0,
                learning_rate=2e-3, save_steps=100, max_length=64)
    return DPOConfig(**{**base, **overrides})


def fresh_reference(model_dir, pairs: pl.DataFrame, max_length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probs of a freshly loaded ``model_dir`` over ``pairs``: (N,), (N,)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = PairCollator(tokenizer.pad_token_id)(encode_pairs(tokenizer, pairs.iter_rows(named=True), max_length))
    with torch.no_grad():
        out = concatenated_logps(model, batch)
    return out["policy_chosen_logps"], out["policy_rejected_logps"]


def stored_reference(run_dir) -> tuple[torch.Tensor, torch.Tensor]:
    table = pl.read_parquet(run_dir / "reference_logps.parquet")
    return (torch.tensor(table["reference_chosen_logps"].to_list()),
            torch.tensor(table["reference_rejected_logps"].to_list()))


# -- fast: tokenisation, collation, monitor ------------------------------------------------------

def test_encode_pair_masks_prompt_and_ends_answers_with_eos(policy_dir):
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    enc = encode_pair(tokenizer, "Tell me about tea.", "Tea is nice.", "no", max_length=64)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me about tea."}],
                                             add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(enc["prompt_ids"]) == rendered
    assert enc["chosen_ids"][-1] == enc["rejected_ids"][-1] == tokenizer.eos_token_id
    messages = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert "<|system|>" in tokenizer.decode(encode_pair(tokenizer, messages, "a", "b", 64)["prompt_ids"])
    batch = PairCollator(tokenizer.pad_token_id)([enc])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(enc["prompt_ids"]) + len(enc["chosen_ids"]))
    assert (batch["labels"][:, :len(enc["prompt_ids"])] == IGNORE).all()
    assert batch["labels"][0, len(enc["prompt_ids"]):].tolist() == enc["chosen_ids"]
    assert batch["attention_mask"][1].sum() == len(enc["prompt_ids"]) + len(enc["rejected_ids"])


def test_truncation_keeps_prompt_end_and_answer_start(policy_dir):
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    enc = encode_pair(tokenizer, "word " * 100, "answer " * 40, "x", max_length=32)
    assert len(enc["prompt_ids"]) + len(enc["chosen_ids"]) <= 32
    assert len(enc["chosen_ids"]) == 16 and enc["chosen_ids"][-1] != tokenizer.eos_token_id
    assert enc["rejected_ids"][-1] == tokenizer.eos_token_id


def test_monitor_flags_degradation(caplog):
    monitor = LikelihoodMonitor(ratio=3.0)
    assert monitor.update(0.5, -4.0)["3d/degradation"] == 0.0  # chosen rising: healthy
    with caplog.at_level(logging.WARNING):
        out = monitor.update(-1.0, -8.0, step=7)
    assert out["3d/degradation"] == 1.0 and "degradation at step 7" in caplog.text and "-8.000" in caplog.text
    free = LikelihoodMonitor(ratio=3.0, has_reference=False)
    assert free.update(-10.0, -10.0)["3d/chosen_logps_change"] == 0.0  # first window is the baseline
    assert free.update(-11.0, -20.0)["3d/degradation"] == 1.0


# -- slow: training ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_each_loss_trains(policy_dir, tmp_path, loss):
    start = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).state_dict()
    final = train_dpo(policy_dir, make_pairs(), tmp_path / "run", tiny_cfg(loss=loss))
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["loss"] < metrics[0]["loss"], [m["loss"] for m in metrics]
    trained = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    frozen = [n for n, p in trained.named_parameters() if torch.equal(p.detach(), start[n])]
    assert not frozen, f"parameters that did not move: {frozen}"
    assert (tmp_path / "run" / "reference_logps.parquet").exists() != LOSSES[loss].reference_free


@pytest.mark.slow
def test_reference_precomputed_metrics_and_outputs(policy_dir, tmp_path):
    pairs = make_pairs()
    run = tmp_path / "run"
    final = train_dpo(policy_dir, pairs, run, tiny_cfg(eval_fraction=0.25, batch_size=8, grad_accum=1))
    ref_c, ref_r = stored_reference(run)
    want_c, want_r = fresh_reference(policy_dir, pairs)
    assert torch.allclose(ref_c, want_c, atol=1e-4) and torch.allclose(ref_r, want_r, atol=1e-4)
    first = read_metrics(run)[0]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "eval_rewards/accuracies", "3d/degradation"):
        assert key in first, key
    # at step 1 the policy is the reference: zero rewards, DPO loss log 2
    assert abs(first["rewards/chosen"]) < 1e-4 and first["loss"] == pytest.approx(0.6931, abs=1e-3)
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == "dpo" and config["num_eval_pairs"] == 8
    assert (final / "config.json").exists() and (final / "tokenizer.json").exists()


@pytest.mark.slow
def test_resume_from_checkpoint_matches_uninterrupted_run(policy_dir, tmp_path):
    pairs = make_pairs()
    straight = train_dpo(policy_dir, pairs, tmp_path / "straight", tiny_cfg(max_steps=4, save_steps=2))
    run = tmp_path / "resumed"
    train_dpo(policy_dir, pairs, run, tiny_cfg(max_steps=2, save_steps=2))
    assert (run / "checkpoint-2").is_dir()
    resumed = train_dpo(policy_dir, pairs, run, tiny_cfg(max_steps=4, save_steps=2))
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4]
    a = AutoModelForCausalLM.from_pretrained(straight, dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed, dtype=torch.float32).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_sdpo_reference_is_previous_step_and_rerun_skips(policy_dir, tmp_path, monkeypatch):
    pairs = make_pairs()
    chunks = pairs.with_columns(chunk=pl.Series([i // 16 for i in range(32)]),
                                difficulty=pl.Series([float(i) for i in range(32)]))
    cfg = tiny_cfg(max_steps=2, batch_size=8)
    final = train_sdpo(policy_dir, chunks, tmp_path / "sdpo", cfg)
    assert final == step_dir(tmp_path / "sdpo", 1) / "final" and final.is_dir()
    chunk1 = chunks.filter(pl.col("chunk") == 1)
    stored_c, stored_r = stored_reference(step_dir(tmp_path / "sdpo", 1))
    want_c, want_r = fresh_reference(step_dir(tmp_path / "sdpo", 0) / "final", chunk1)
    assert torch.allclose(stored_c, want_c, atol=1e-4) and torch.allclose(stored_r, want_r, atol=1e-4)
    base_c, _ = fresh_reference(policy_dir, chunk1)
    assert not torch.allclose(stored_c, base_c, atol=1e-3)  # not the starting model

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished sDPO step was trained again")

    monkeypatch.setattr("prefwork.train.sdpo.train_dpo", must_not_train)
    assert train_sdpo(policy_dir, chunks, tmp_path / "sdpo", cfg) == final


@pytest.mark.slow
def test_dpo_schedule_trains_all_chunks_at_once(policy_dir, tmp_path):
    chunks = make_pairs().with_columns(chunk=pl.Series([i % 2 for i in range(32)]), difficulty=pl.lit(0.5))
    final = train_sdpo(policy_dir, chunks, tmp_path / "base", tiny_cfg(max_steps=1), schedule="dpo")
    assert final == tmp_path / "base" / "dpo" / "final" and final.is_dir()
    assert pl.read_parquet(tmp_path / "base" / "dpo" / "reference_logps.parquet").height == 32
    with pytest.raises(ValueError, match="valid schedules: sdpo, dpo"):
        train_sdpo(policy_dir, chunks, tmp_path / "x", tiny_cfg(), schedule="random")


@pytest.mark.slow
def test_reference_cache_is_not_reused_for_other_pairs(policy_dir, tmp_path):
    run = tmp_path / "run"
    train_dpo(policy_dir, make_pairs(), run, tiny_cfg(max_steps=1))
    other = make_pairs().with_columns(chosen=pl.col("chosen") + " Truly.")
    shutil.rmtree(run / "final")
    train_dpo(policy_dir, other, run, tiny_cfg(max_steps=2))
    want_c, _ = fresh_reference(policy_dir, other)
    assert torch.allclose(stored_reference(run)[0], want_c, atol=1e-4)


def test_ddp_skips_the_unused_parameter_search(tmp_path):
    """Every weight of a causal LM gets a gradient: DDP's per-step graph walk is pure overhead."""
    from prefwork.train.dpo import _training_args

    assert _training_args(tmp_path, DPOConfig()).ddp_find_unused_parameters is False


def test_logits_only_over_the_answer_window_match_full_logits(policy_dir):
    """Scoring only the trailing positions that hold answer tokens gives the full-logits sums."""
    from prefwork.train.logps import answer_window, sequence_logps

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    rows = [{"prompt": f"Tell me about {t}, briefly please." * (1 + i % 3), "chosen": f"{t} is fine.",
             "rejected": "no"} for i, t in enumerate(TOPICS[:6])]
    batch = PairCollator(tokenizer.pad_token_id)(encode_pairs(tokenizer, rows, 96))
    keep = answer_window(batch["labels"])
    assert keep < batch["labels"].shape[1]  # the shortest prompt is skipped
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        want, _ = sequence_logps(full, batch["labels"])
        got = concatenated_logps(model, batch)
    torch.testing.assert_close(torch.cat([got["policy_chosen_logps"], got["policy_rejected_logps"]]), want,
                               rtol=1e-5, atol=1e-4)
