"""k-repeat evaluation wiring (evaluators/evaluate.py) and the winrate/report commands, on a fake engine.

The fake engine draws words from a seeded RNG, so these tests need no model and run in
seconds; the real tiny policy is exercised in tests/test_winrate_e2e.py.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from prefwork.evaluators import registry
from prefwork.evaluators.evaluate import EvalConfig, evaluate
from prefwork.evaluators.judges import make_judge
from prefwork.evaluators.registry import register_judge
from prefwork.evaluators.report_winrate import tables
from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.sample import Completion, derive_seed
from prefwork.pipeline.schemas import SchemaError

from conftest import DATA, run_cli

WORDS = "fresh novels bookstore read every day flowers bloom shop bike ride fast new cream scoop cone".split()


class FakeEngine:
    """Seeded random word salads; ``quality`` shifts how many keyword-ish words it uses."""

    name = "fake"

    def __init__(self, words=WORDS):
        self.words = words

    def generate(self, prompts, cfg, shard_seed):
        out = []
        for p in prompts:
            comps = []
            for j in range(cfg.n):
                seed = derive_seed(shard_seed, j)
                rng = random.Random(f"{seed}:{p}")
                text = " ".join(rng.choice(self.words) for _ in range(rng.randint(3, 7)))
                comps.append(Completion(text, "stop", len(text.split()), seed))
            out.append(comps)
        return out


def prompts(n=12) -> pl.DataFrame:
    return load_prompts(DATA / "prompts" / "heldout.jsonl").filter(pl.col("task") == "slogan").head(n)


def run_eval(tmp_path, models=None, baseline="base_dir", cfg=None, engines=None, **kw):
    engines = engines or {}
    return evaluate(prompts(), models or {"m": "model_dir"}, baseline, cfg=cfg or EvalConfig(repeats=3),
                    out_dir=tmp_path, engine_for=lambda d: engines.get(str(d), FakeEngine()), **kw)


def render(table) -> str:
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_model_vs_itself_uses_fresh_distinct_seeds(tmp_path):
    r = run_eval(tmp_path, models={"m": "same"}, baseline="same", baseline_name="same-base")
    j = r.judgments
    assert j.height == 12 * 3 and sorted(j["repeat"].unique()) == [0, 1, 2]
    m = pl.read_parquet(r.candidates["m"])
    b = pl.read_parquet(r.candidates["baseline"])
    assert set(m["seed"]).isdisjoint(set(b["seed"]))  # the two sides never share a seed
    assert m["seed"].n_unique() == 3  # a fresh seed per repeat (one shard: prompts share it)
    s = r.summaries["m"]
    assert s.n_repeats == 3 and s.n_prompts == 12 and s.n_errors == 0
    assert (j["model_text"] != j["baseline_text"]).any()


def test_prompts_per_repeat_is_the_same_subset_every_repeat(tmp_path):
    r = run_eval(tmp_path, cfg=EvalConfig(repeats=2, prompts_per_repeat=5, seed=3))
    per = r.judgments.group_by("repeat").agg(pl.col("prompt_id").sort())
    assert per["prompt_id"][0].to_list() == per["prompt_id"][1].to_list() and len(per["prompt_id"][0]) == 5


def test_reference_baseline_is_fixed_across_repeats(tmp_path):
    p = prompts().with_columns(reference=pl.lit("fresh novels every day"))
    r = evaluate(p, {"m": "x"}, "reference", cfg=EvalConfig(repeats=3), out_dir=tmp_path,
                 engine_for=lambda d: FakeEngine())
    assert r.baseline == "reference" and "baseline" not in r.candidates
    assert r.judgments["baseline_text"].unique().to_list() == ["fresh novels every day"]
    with pytest.raises(SchemaError, match="row 2.*reference"):
        evaluate(p.with_columns(reference=pl.when(pl.int_range(pl.len()) == 1).then(None)
                                .otherwise(pl.col("reference"))),
                 {"m": "x"}, "reference", cfg=EvalConfig(repeats=1), out_dir=tmp_path,
                 engine_for=lambda d: FakeEngine())


def test_failing_scores_are_counted_not_dropped(tmp_path):
    # Inject a failing score: one prompt's meta is broken, so the rule judge errors on it in
    # every repeat. Those judgments stay in the table, counted and bounded.
    p = prompts().with_columns(meta=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit('{"words": "five"}'))
                               .otherwise(pl.col("meta")))
    r = evaluate(p, {"m": "x"}, "y", cfg=EvalConfig(repeats=3), out_dir=tmp_path, engine_for=lambda d: FakeEngine())
    j, s = r.judgments, r.summaries["m"]
    failed = j.filter(pl.col("preference").is_null())
    assert failed.height == 3 and failed["error"].str.contains("words").all()
    assert j.height == 36 and s.n_errors == 3 and s.n == 33
    assert s.per_repeat["errors"].to_list() == [1, 1, 1] and s.per_repeat["n"].to_list() == [11, 11, 11]
    assert s.win_rate_if_errors_lose < s.win_rate_if_errors_win
    text = render(tables(r)[0])
    assert f"3 ({100 * s.win_rate_if_errors_lose:.1f}%–{100 * s.win_rate_if_errors_win:.1f}%)" in text


class FlakyJudge:
    """A judge that fails on one pair, loses another, and flips coins elsewhere (compares, never scores)."""

    name = "flaky"
    deterministic = False

    def __init__(self, fail_every: str = "5"):
        self.fail_every = int(fail_every)

    def compare(self, model, baseline, *, judge_repeat=0):
        rows = []
        both = model.join(baseline, on=["prompt_id", "candidate_id"], suffix="_b")
        for i, r in enumerate(both.sort("candidate_id", "prompt_id").iter_rows(named=True)):
            if i == 1:
                continue  # the judge returned nothing for this pair
            fail = i % self.fail_every == 0
            coin = random.Random(f"{judge_repeat}:{r['seed']}:{r['prompt_id']}")
            pref = None if fail else coin.choice([0.0, 0.5, 1.0])
            rows.append(dict(prompt_id=r["prompt_id"], repeat=r["candidate_id"], model=r["model"],
                             baseline=r["model_b"], judge=self.name, model_text=r["text"], baseline_text=r["text_b"],
                             model_len=len(r["text"]), baseline_len=len(r["text_b"]), preference=pref,
                             error="timeout" if fail else None))
        return pl.DataFrame(rows, schema_overrides={"preference": pl.Float64, "error": pl.String})


def test_plugged_in_judge_missing_rows_become_failures_and_rejudge_splits_noise(tmp_path):
    register_judge("flaky", FlakyJudge)
    try:
        r = run_eval(tmp_path, cfg=EvalConfig(repeats=3, judge="flaky", rejudge=3), judge_opts={"fail_every": "7"})
    finally:
        registry.JUDGES.pop("flaky")
    j, s = r.judgments, r.summaries["m"]
    assert j.height == 36  # the dropped pair is back, as a failure
    assert j.filter(pl.col("error") == "judge returned no judgment").height == 1
    assert s.n_errors == 1 + len(range(0, 36, 7))
    v = r.variance["m"]
    assert v["n_judge_repeats"] == 3 and v["std_judge"] > 0 and r.rejudgments["judge_repeat"].n_unique() == 3
    assert "Judge" in render(tables(r)[-1])


def test_rules_rejudge_is_skipped_with_a_note_and_unknown_judge_lists_valid(tmp_path):
    r = run_eval(tmp_path, cfg=EvalConfig(repeats=2, rejudge=3))
    assert r.variance == {} and r.rejudgments is None and "deterministic" in r.notes[0]
    assert "deterministic judge" in render(tables(r)[-1])
    with pytest.raises(ValueError, match="unknown judge 'gpt'.*rules"):
        make_judge("gpt")


def test_paired_comparison_same_prompts_and_repeats(tmp_path):
    good = FakeEngine(WORDS[:3] + ["novels", "bookstore", "flowers"])  # on-topic words: passes more rules
    r = run_eval(tmp_path, models={"good": "g", "plain": "p"}, engines={"g": good},
                 cfg=EvalConfig(repeats=3))
    assert set(r.judgments["model"]) == {"good", "plain"}
    p = r.paired
    assert p is not None and p.n_pairs == 36 and p.ci_low <= p.mean_diff <= p.ci_high
    assert p.mean_diff == pytest.approx(r.summaries["good"].win_rate - r.summaries["plain"].win_rate)
    assert "Paired comparison" in tables(r)[2].title


def test_winrate_cli_in_process_writes_run_dir_and_history(tmp_path, monkeypatch, capsys):
    from prefwork.flows.cli import main
    from prefwork.flows.commands import winrate

    monkeypatch.setattr(winrate, "_engines", lambda args: ("fake", lambda d: FakeEngine()))
    src = tmp_path / "p.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": r["prompt"], "task": r["task"], "meta": json.loads(r["meta"])})
                             for r in prompts().iter_rows(named=True)))
    ws = tmp_path / "ws"
    rc = main(["winrate", "--model", "a/model", "--compare", "b", "--baseline", "base", "--prompts", str(src),
               "--repeats", "2", "--workspace", str(ws), "--stage", "DPO", "--rejudge", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Per repeat" in out and "Paired comparison" in out and "deterministic" in out
    (run_dir,) = [d for d in ws.iterdir() if d.is_dir() and d.name.endswith("winrate")]
    for name in ("judgments.parquet", "summary.json", "per_repeat.parquet", "winrate.png", "winrate_repeats.png",
                 "report.md", "config.json", "provenance.json"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["models"]) == {"a/model", "b"} and summary["paired"]["n_pairs"] == 24
    hist = pl.read_parquet(ws / "history.parquet")
    assert hist["model"].to_list() == ["a/model", "b"] and hist["stage"].to_list() == ["DPO", "DPO"]
    assert hist["k"].to_list() == [2, 2] and hist["n"].to_list() == [12, 12]

    md = tmp_path / "h.md"
    assert main(["report", "--workspace", str(ws), "--model", "b", "--markdown", str(md), "--extra", "ci"]) == 0
    out = capsys.readouterr().out
    assert "Win Rate" in out and "a/model" not in out
    assert md.read_text().splitlines()[0] == "| Model | Stage | Date | Win Rate | STD | Min | Max | 95% CI |"
    assert main(["report", "--workspace", str(ws), "--stage", "nope"]) == 1
    assert main(["report", "--workspace", str(tmp_path / "empty")]) == 1  # no history: a clear error


def test_cli_help_runs(capsys):
    # One fresh interpreter (the real entry point), the other in-process: building the parser
    # imports every command module, which is slow on a busy 2-core machine.
    res = run_cli("winrate", "--help", timeout=300)
    assert res.returncode == 0, res.stderr
    assert "--prompts-per-repeat" in res.stdout and "--compare" in res.stdout and "--rejudge" in res.stdout
    from prefwork.flows.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0 and "--markdown" in capsys.readouterr().out


def test_llm_pairwise_judge_plugs_in_and_rejudging_makes_new_calls(tmp_path):
    from _judge_helpers import FakeServer, completion

    def script(body, n):  # a noisy judge: the verdict depends on the request's seed and content
        coin = random.Random(f"{body.get('seed')}:{body['messages'][-1]['content']}")
        return completion(coin.choice(["A", "B", "tie"]))

    server = FakeServer(script)
    opts = {"base_url": "http://fake/v1", "model": "fake-judge", "orders": "random", "max_retries": "0",
            "http_client": server.client()}
    r = run_eval(tmp_path, cfg=EvalConfig(repeats=2, judge="pairwise", rejudge=2), judge_opts=opts)
    j = r.judgments
    assert r.judge == "pairwise" and not r.deterministic_judge and j.height == 24
    assert j["preference"].is_not_null().all() and set(j["preference"]) <= {0.0, 0.5, 1.0}
    calls = len(server.bodies)
    assert 24 <= calls <= 48  # the re-judgment was asked again, not served from judgment 0's cache
    assert len({b.get("seed") for b in server.bodies}) >= 2
    assert r.variance["m"]["n_judge_repeats"] == 2 and r.judge_usage["total"]["requests"] == calls
    with pytest.raises(ValueError, match="unknown option.*bogus"):
        make_judge("pairwise", bogus="1")
