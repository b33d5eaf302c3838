"""The LLM judges against a REAL vLLM OpenAI-compatible server (CPU build) on loopback.

The tiny random policy stands in as the judge; structured outputs force a valid grade, so every answer
parses. Requests are counted at the server (its access log, or ``vllm:request_success_total`` when stats are on).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import ROOT, run_cli
from prefwork.evaluators.llm_client import ClientOptions
from prefwork.evaluators.session import JudgeSession
from prefwork.pipeline.schemas import CANDIDATES, SCORES, validate

SUCCESS = "vllm:request_success_total"
SECRET = "sk-prefwork-never-log-me-0123456789"


def tiny_judge(root: Path, kind: str = "rubric") -> Path:
    """A judge whose prompt fits the test server's 256-token context; model '' = the server's model."""
    d = root / f"tiny_{kind}"
    d.mkdir(parents=True, exist_ok=True)
    if kind == "rubric":
        body = ("kind: rubric\nmodel: ''\nmax_tokens: 2\nscore_range: [1, 5]\ncorrect_threshold: 4\n"
                "structured: vllm\ntemplate: prompt.md\n")
        (d / "prompt.md").write_text("Grade 1-5.\nQ: {{prompt}}\nA: {{answer}}\nGrade:")
    else:
        body = ("kind: pairwise\nmodel: ''\nmax_tokens: 2\nchoices: [A, B, tie]\nstructured: vllm\n"
                "template: prompt.md\n")
        (d / "prompt.md").write_text("Q: {{prompt}}\nA: {{answer_a}}\nB: {{answer_b}}\nBetter (A, B or tie):")
    (d / "config.yaml").write_text(body)
    return d


def candidates(n: int, tag: str) -> pl.DataFrame:
    return validate(pl.DataFrame({
        "prompt_id": [f"{tag}{i // 4}" for i in range(n)], "prompt": [f"What is {i // 4} plus {i // 4}?" for i in range(n)],
        "candidate_id": [i % 4 for i in range(n)], "text": [f"It is {i} ({tag})." for i in range(n)],
        "model": ["policy"] * n, "seed": list(range(n)), "finish_reason": ["stop"] * n, "num_tokens": [5] * n,
    }), CANDIDATES)


def settle(server, wait: float = 0.5) -> float:
    """Chat completions the server has answered so far.

    Read from its access log ("POST /v1/chat/completions ... 200"), because the shared fixture runs
    with --disable-log-stats, which leaves ``vllm:request_success_total`` at 0; the larger of the two
    counts is used, so the metric takes over if stats are switched on.
    """
    time.sleep(wait)
    text = Path(server.log_path).read_text(errors="replace")
    logged = sum(1 for line in text.splitlines() if '"POST /v1/chat/completions HTTP/1.1" 200' in line)
    return max(logged, server.metric(SUCCESS))


def test_cli_scores_contract_cache_and_no_key_leak(vllm_server, tmp_path):
    judge = tiny_judge(tmp_path)
    cand_path = tmp_path / "cands.parquet"
    candidates(12, "c").write_parquet(cand_path)
    out, db, rd = tmp_path / "scores.parquet", tmp_path / "judges.sqlite", tmp_path / "run1"
    args = ["judge", "--judge", str(judge), "--in", str(cand_path), "--out", str(out), "--base-url", vllm_server.base_url,
            "--cache", str(db), "--api-key-env", "PREFWORK_TEST_KEY", "--concurrency", "8"]
    env = {"PREFWORK_TEST_KEY": SECRET}
    before = settle(vllm_server, 0)
    r1 = run_cli(*args, "--run-dir", str(rd), env=env)
    assert r1.returncode == 0, r1.stderr
    after1 = settle(vllm_server)
    assert after1 - before == 12
    scores = validate(pl.read_parquet(out), SCORES)
    assert scores.height == 12 and scores["error"].null_count() == 12
    assert set(scores["score"].to_list()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert scores["judge"].unique().to_list() == ["tiny_rubric"]
    usage = json.loads((rd / "usage.json").read_text())
    assert usage["judges"]["tiny_rubric"]["requests"] == 12 and usage["total"]["prompt_tokens"] > 0

    r2 = run_cli(*args, "--run-dir", str(tmp_path / "run2"), env=env)
    assert r2.returncode == 0, r2.stderr
    assert settle(vllm_server) - after1 == 0  # the cache answered everything
    assert pl.read_parquet(out).equals(scores)
    assert json.loads((tmp_path / "run2" / "usage.json").read_text())["total"]["cached"] == 12

    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks and SECRET not in r1.stdout + r1.stderr + r2.stdout + r2.stderr
    assert SECRET not in Path(vllm_server.log_path).read_text(errors="replace")


def test_killed_run_resumes_without_repeating_requests(vllm_server, tmp_path):
    judge, db = str(tiny_judge(tmp_path)), tmp_path / "judges.sqlite"
    df = candidates(40, "k")

    async def killed():
        s = JudgeSession(ClientOptions(base_url=vllm_server.base_url, concurrency=4), cache=db)
        task = asyncio.create_task(s.ascore(judge, df))
        while s.cache.count() < 10:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await s.client.close()
        return s.cache.count()
    done = asyncio.run(killed())
    assert 10 <= done < 40
    before = settle(vllm_server, 1.0)  # requests cut off by the kill have finished or been aborted
    with JudgeSession(ClientOptions(base_url=vllm_server.base_url, concurrency=8), cache=db) as s:
        out = s.score(judge, df)
        assert s.usage()["total"]["cached"] == done
    assert settle(vllm_server) - before == 40 - done
    assert out.height == 40 and out["error"].null_count() == 40


def test_pairwise_judgments_and_listwise_on_real_server(vllm_server, tmp_path):
    from prefwork.evaluators.winrate import summarize

    pj, rj = str(tiny_judge(tmp_path, "pairwise")), tiny_judge(tmp_path)
    (rj / "listwise.md").write_text("Q: {{prompt}}\n{{answers}}\nBest and worst as JSON:")
    (rj / "config.yaml").write_text((rj / "config.yaml").read_text() + "listwise_template: listwise.md\n")
    m = candidates(8, "m")
    b = m.with_columns(pl.lit("sft").alias("model"),
                       pl.when(pl.col("candidate_id") == 0).then(pl.col("text"))
                       .otherwise(pl.concat_str(pl.lit("Maybe "), pl.col("text"))).alias("text"))
    before = settle(vllm_server, 0)
    with JudgeSession(ClientOptions(base_url=vllm_server.base_url), cache=tmp_path / "c.sqlite") as s:
        j = s.compare(pj, m, b)
        assert summarize(j).to_dict()  # the win-rate code takes the judgments as they are
        s.listwise = True
        lw = s.score(str(rj), m)
    assert j.height == 8 and j["error"].null_count() == 8
    assert j.filter(pl.col("model_text") == pl.col("baseline_text"))["preference"].to_list() == [0.5, 0.5]
    # 6 differing pairs x 2 orders + 2 listwise calls (one per prompt), identical pairs cost nothing
    assert settle(vllm_server) - before == 6 * 2 + 2
    assert lw["error"].null_count() == 8
    for _, g in lw.group_by("prompt_id"):
        assert sorted(g["score"].to_list()) == [1.0, 3.0, 3.0, 5.0]


def test_judge_audit_on_small_pair_set(vllm_server, tmp_path):
    judge = tiny_judge(tmp_path, "pairwise")
    meta = json.dumps({"subject": "tea", "keywords": ["tea"], "words": 3})
    pairs = [{"prompt": f"Slogan {i} about tea?", "a": "Drink more tea", "b": f"Tea tea is a fine drink number {i}",
              "label": "A", "task": "slogan", "meta": meta} for i in range(4)]
    pairs += [{"prompt": "2+2?", "a": "4", "b": "5", "label": "A"}, {"prompt": "3+3?", "a": "5", "b": "6", "label": "B"}]
    pf = tmp_path / "pairs.jsonl"
    pf.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    rd = tmp_path / "audit_run"
    r = run_cli("judge", "audit", "--judge", str(judge), "--pairs", str(pf), "--repeats", "2", "--base-url",
                vllm_server.base_url, "--cache", str(tmp_path / "c.sqlite"), "--run-dir", str(rd))
    assert r.returncode == 0, r.stderr
    assert "position_consistency" in r.stderr and "length_bias" in r.stderr
    m = json.loads((rd / "audit.json").read_text())["pairs"]
    assert m["pairs"] == 6 and m["repeats"] == 2 and m["failed_calls"] == 0
    for key in ("position_consistency", "self_consistency", "label_agreement", "rule_agreement"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["label_n"] == 6 and m["rule_n"] == 4 and (rd / "audit.txt").exists()
    assert m["label_agreement_constant"] == 5 / 6  # always "A" matches 5 of the 6 labels
    assert sum(m["verdicts"].values()) == 6 and set(m["verdicts"]) <= {"0.0", "0.5", "1.0"}
    assert pl.read_parquet(rd / "audit_pairs.parquet").height == 6

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt": "1+1?", "answer": a, "grade": g}) + "\n"
                            for a, g in (("2", 5), ("3", 2), ("two", 4))))
    from prefwork.evaluators.audit import load_table, run_audit
    with JudgeSession(ClientOptions(base_url=vllm_server.base_url)) as s:  # in-process: one CLI start is enough
        g, table = run_audit(s, str(tiny_judge(tmp_path)), gold=load_table(gold))["gold"]
    assert table.height == 3 and table["error"].null_count() == 3
    assert g["gold"] == 3 and 0.0 <= g["exact_agreement"] <= 1.0 and g["correct_agreement"] is not None
    assert g["correct_agreement_constant"] == 2 / 3  # grades 5, 2, 4: two of three are "correct" (>= 4)
    given = table["score"].to_list()
    assert g["scores"] == {str(v): given.count(v) for v in set(given)}


def test_throughput_bench_smoke(vllm_server, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "judge_throughput.py"), "--smoke", "--base-url",
                        vllm_server.base_url, "--model", vllm_server.model, "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    rps = res["rps"]
    assert all(v > 0 for v in rps.values())
    # speed is the bench's figure, not a test's (timings on a shared 2-core box are noise): the smoke
    # run only has to produce both ratios from its three measured modes
    assert res["vs_sequential"] == pytest.approx(rps["prefwork"] / rps["sequential"], rel=1e-6), res
    assert res["vs_bare_async"] == pytest.approx(rps["prefwork"] / rps["bare_async"], rel=1e-6), res
