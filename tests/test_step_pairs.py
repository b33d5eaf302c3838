"""Step-level pair assembly (pipeline.step_pairs) on the hand-written math data: the PAIRS contract
with step_index, on-policy continuations (scripted and from the real tiny policy), the reference
fallback, dropped-and-counted prompts, the LLM judge on the real vLLM server, training with every
loss, and ``prefwork pairs`` (step level and best-vs-worst).
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefwork.evaluators.step_check import CheckStepJudge
from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.sample import Completion
from prefwork.pipeline.schemas import PAIRS, validate
from prefwork.pipeline.step_pairs import StepPairConfig, assemble_step_pairs, load_solutions
from prefwork.pipeline.steps import split_steps

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "math"
PROBLEMS = load_prompts(DATA / "problems.jsonl")
SOLUTIONS = load_solutions(DATA / "solutions.jsonl")
LOCATABLE = SOLUTIONS.filter(pl.col("first_error").is_not_null() & (pl.col("kind") != "logic"))


class ScriptedEngine:
    """An engine that answers each prompt with given texts (by prompt substring), else nonsense."""

    name = "scripted"

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, []

    def generate(self, prompts, cfg, shard_seed):
        self.calls.append((prompts, cfg))
        out = []
        for p in prompts:
            texts = next((t for key, t in self.answers.items() if key in p), ["blah blah"] * cfg.n)
            out.append([Completion(t, "stop", 5, shard_seed) for t in texts[:cfg.n]])
        return out


def check_contract(pairs: pl.DataFrame) -> None:
    validate(pairs, PAIRS)
    assert pairs.schema["step_index"] == pl.Int64 and pairs["step_index"].null_count() == 0
    for r in pairs.iter_rows(named=True):
        problem = PROBLEMS.filter(pl.col("prompt_id") == r["prompt_id"].split(":")[0])["prompt"][0]
        before = split_steps(r["prompt"][len(problem):]) if r["step_index"] else []
        assert r["prompt"].startswith(problem) and len(before) == r["step_index"]
        assert r["chosen"] != r["rejected"]
        assert r["chosen"].startswith(f"Step {r['step_index'] + 1}: ")
        assert r["rejected"].startswith(f"Step {r['step_index'] + 1}: ")


def test_policy_continuation_is_chosen_when_it_checks_else_the_reference_step():
    sols = LOCATABLE.filter(pl.col("prompt_id").is_in(["m01", "m03", "m09"]))
    engine = ScriptedEngine({
        # m01, error at step 3: the second sample is right (the first repeats the mistake)
        "gives away 30 + 5 = 35 muffins.": ["She has 48 - 35 = 23 muffins left.", "She has 48 - 35 = 13 muffins."],
        # m03: every sample is wrong -> the reference step; m09 (error at step 1): nonsense -> reference
        "travels 60 * 3 = 180 miles.": ["40 * 2 = 70 miles", "so far so good"],
    })
    pairs, stats = assemble_step_pairs(PROBLEMS, sols, CheckStepJudge(), engine, StepPairConfig(n=2))
    check_contract(pairs)
    rows = {r["prompt_id"]: r for r in pairs.iter_rows(named=True)}
    assert set(rows) == {"m01:2", "m03:1", "m09:0"}
    assert rows["m01:2"]["chosen"] == "Step 3: She has 48 - 35 = 13 muffins." and rows["m01:2"]["chosen_id"] == 1
    assert rows["m01:2"]["rejected"] == "Step 3: She has 48 - 35 = 23 muffins left."
    assert rows["m03:1"]["chosen"] == "Step 2: In the second part it travels 40 * 2 = 80 miles."
    assert rows["m03:1"]["chosen_id"] == -1 and rows["m09:0"]["chosen_id"] == -1
    assert rows["m09:0"]["prompt"] == PROBLEMS.filter(pl.col("prompt_id") == "m09")["prompt"][0]
    assert (stats.chosen_from_policy, stats.chosen_from_reference, stats.pairs) == (1, 2, 3)
    prompts, cfg = engine.calls[0]
    assert cfg.stop == ["\n"] and cfg.n == 2 and len(prompts) == 3  # one step, sampled on the pair's prompt


def test_without_a_reference_the_prompt_is_dropped_and_counted():
    problems = PROBLEMS.with_columns(reference=pl.when(pl.col("prompt_id") == "m03").then(None)
                                     .otherwise(pl.col("reference")))
    sols = LOCATABLE.filter(pl.col("prompt_id").is_in(["m03", "m09"]))
    pairs, stats = assemble_step_pairs(problems, sols, CheckStepJudge(), ScriptedEngine({}), StepPairConfig(n=2))
    assert pairs["prompt_id"].to_list() == ["m09:0"]
    assert stats.dropped_no_correct_step == 1 and stats.dropped == ["m03:1"]
    none, stats = assemble_step_pairs(problems, sols, CheckStepJudge(), ScriptedEngine({}),
                                      StepPairConfig(n=2, use_reference=False))
    assert none.height == 0 and stats.dropped_no_correct_step == 2
    validate(none, PAIRS)


@pytest.fixture(scope="module")
def policy_step_pairs(tiny_random_policy):
    """Step pairs of all the data from the real tiny policy (on-policy samples) and the checker."""
    from prefwork.pipeline.engines import TransformersEngine

    engine = TransformersEngine(tiny_random_policy, threads=1)
    return assemble_step_pairs(PROBLEMS, SOLUTIONS, CheckStepJudge(), engine, StepPairConfig(n=2, max_tokens=24))


@pytest.mark.slow
def test_all_hand_written_solutions_give_contract_pairs_at_the_labelled_step(policy_step_pairs):
    pairs, stats = policy_step_pairs
    check_contract(pairs)
    labels = {(r["prompt_id"], r["solution_id"]): r for r in SOLUTIONS.iter_rows(named=True)}
    assert stats.solutions == SOLUTIONS.height
    assert stats.with_error == LOCATABLE.height and stats.unlocated == (SOLUTIONS["kind"] == "logic").sum()
    assert stats.judged_correct == (SOLUTIONS["kind"] == "correct").sum()
    assert stats.pairs == pairs.height == stats.with_error - stats.dropped_no_correct_step
    assert stats.continuations == 2 * stats.with_error  # n samples for every wrong-step prefix
    for r in pairs.iter_rows(named=True):
        label = labels[(r["prompt_id"].split(":")[0], r["rejected_id"])]
        assert r["step_index"] == label["first_error"]
        assert r["rejected"] == split_steps(label["text"])[r["step_index"]]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["dpo", "ipo", "hinge", "slic", "minor_dpo", "flex_dpo", "dpo_sft"])
def test_step_pairs_train_with_every_loss(loss, policy_step_pairs, tiny_random_policy, tmp_path):
    import math

    from prefwork.train.dpo import DPOConfig, train_dpo
    from prefwork.train.losses import LOSSES

    assert set(LOSSES) == {"dpo", "ipo", "hinge", "slic", "minor_dpo", "flex_dpo", "dpo_sft"}
    pairs = policy_step_pairs[0].head(4)
    final = train_dpo(tiny_random_policy, pairs, tmp_path, DPOConfig(loss=loss, max_steps=1, batch_size=4,
                                                                       eval_fraction=0.0, logging_steps=1))
    assert (final / "config.json").exists()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in x and math.isfinite(x["loss"]) for x in lines)


@pytest.mark.slow
def test_llm_judge_assembly_on_vllm_keeps_the_contract(vllm_server, tiny_random_policy):
    from prefwork.evaluators.step_judge import LLMStepJudge, StepJudgeConfig

    sols = SOLUTIONS.filter(pl.col("prompt_id").is_in(["m06", "m07", "m09", "m13", "m17"]))
    judge = LLMStepJudge(StepJudgeConfig(base_url=vllm_server.base_url, model=vllm_server.model, rubric=""))
    engine = ScriptedEngine({})
    pairs, stats = assemble_step_pairs(PROBLEMS, sols, judge, engine, StepPairConfig(n=2))
    validate(pairs, PAIRS)
    assert stats.solutions == sols.height == (stats.judged_correct + stats.with_error + stats.unlocated
                                              + stats.judge_failed + stats.unsplittable)
    assert stats.judge_failed == 0  # structured outputs: every answer parsed
    assert stats.pairs == stats.with_error - stats.duplicate_prefixes - stats.dropped_no_correct_step
    for r in pairs.iter_rows(named=True):
        n_steps = len(split_steps(sols.filter((pl.col("prompt_id") == r["prompt_id"].split(":")[0])
                                              & (pl.col("solution_id") == r["rejected_id"]))["text"][0]))
        assert 0 <= r["step_index"] < n_steps


def test_pairs_cli_best_vs_worst_and_bad_input(tmp_path, capsys):
    from prefwork.flows.cli import main
    from prefwork.pipeline.store import read_table, write_table

    cands = pl.DataFrame({"prompt_id": ["a", "a", "b", "b"], "prompt": ["p", "p", "q", "q"], "candidate_id": [0, 1, 0, 1],
                          "text": ["x", "y", "z", "w"], "model": "m", "seed": 0, "finish_reason": "stop", "num_tokens": 1})
    scores = pl.DataFrame({"prompt_id": ["a", "a", "b", "b"], "candidate_id": [0, 1, 0, 1], "judge": "j",
                           "score": [1.0, 4.0, 3.0, 3.0], "detail": "{}", "error": [None] * 4},
                          schema_overrides={"error": pl.String})
    write_table(cands, tmp_path / "c.parquet")
    write_table(scores, tmp_path / "s.parquet")
    out = tmp_path / "pairs.parquet"
    assert main(["pairs", "--candidates", str(tmp_path / "c.parquet"), "--scores", str(tmp_path / "s.parquet"),
                 "--out", str(out)]) == 0
    pairs = read_table(out, PAIRS)
    assert pairs.select("prompt_id", "chosen", "rejected").rows() == [("a", "y", "x")]
    assert json.loads(Path(f"{out}.stats.json").read_text())["dropped_all_tied"] == 1
    assert main(["pairs", "--out", str(out)]) == 1
    assert "needs --candidates, --scores" in capsys.readouterr().err
    assert main(["pairs", "--step-level", "--problems", str(DATA / "problems.jsonl"), "--out", str(out)]) == 1
    assert "needs --solutions, --policy" in capsys.readouterr().err


@pytest.mark.slow
def test_pairs_cli_step_level(tiny_random_policy, tmp_path, capsys):
    from prefwork.flows.cli import main
    from prefwork.pipeline.store import read_table

    sols = tmp_path / "sols.jsonl"
    sols.write_text("".join(json.dumps(r) + "\n" for r in SOLUTIONS.filter(pl.col("prompt_id").is_in(
        ["m01", "m02", "m04", "m10"])).iter_rows(named=True)))
    out = tmp_path / "step_pairs.parquet"
    assert main(["pairs", "--step-level", "--problems", str(DATA / "problems.jsonl"), "--solutions", str(sols),
                 "--policy", str(tiny_random_policy), "--judge", "check", "--step-n", "2", "--step-max-tokens", "16",
                 "--threads", "1", "--out", str(out)]) == 0
    pairs = read_table(out, PAIRS)
    assert sorted(zip(pairs["prompt_id"], pairs["step_index"])) == [("m01:2", 2), ("m02:1", 1), ("m10:1", 1)]
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    assert stats["unlocated"] == 1 and stats["pairs"] == 3  # m04's logic slip cannot be located by arithmetic
    assert "chosen_from_reference" in capsys.readouterr().err
