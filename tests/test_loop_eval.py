"""The loop's evaluation takes the one evaluation path (``evaluators.evaluate.evaluate_pair``).

Issue 19, item 5: a held-out prompt that one side has no answer for (a skipped long prompt, an
engine that returned nothing) must be counted as a failed judgment, not vanish from the denominator.
Fast: no model, no Prefect server (the task's function is called directly).
"""
from __future__ import annotations

import polars as pl

from conftest import DATA
from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.schemas import CANDIDATES, validate
from prefwork.pipeline.store import write_table


def _answers(prompts: pl.DataFrame, k: int, model: str, skip: set[str] = frozenset()) -> pl.DataFrame:
    rows = [dict(prompt_id=p["prompt_id"], prompt=p["prompt"], candidate_id=r, text=f"{model} answer {r}: {p['prompt'][:20]}",
                 model=model, seed=r, finish_reason="stop", num_tokens=5, task=p["task"], meta=p["meta"])
            for p in prompts.iter_rows(named=True) if p["prompt_id"] not in skip for r in range(k)]
    return validate(pl.DataFrame(rows), CANDIDATES)


def test_loop_evaluation_counts_a_prompt_one_side_did_not_answer(tmp_path):
    from prefwork.flows import loop
    from prefwork.flows.loop_config import LoopConfig

    prompts = load_prompts(DATA / "prompts" / "heldout.jsonl").head(5)
    pfile = tmp_path / "heldout.parquet"
    write_table(prompts, pfile)
    missing = prompts["prompt_id"][0]
    model = write_table(_answers(prompts, 2, "round1", skip={missing}), tmp_path / "model.parquet", CANDIDATES)
    base = write_table(_answers(prompts, 2, "sft"), tmp_path / "base.parquet", CANDIDATES)
    cfg = LoopConfig(workspace=str(tmp_path / "ws"), eval_prompts=str(pfile), eval_repeats=2)
    ctx = loop.Context(cfg=cfg, run_dir=str(tmp_path / "run"), cache_root=str(tmp_path / "ws" / ".cache"),
                       engine="transformers")

    out = loop.evaluate_task.fn(ctx, 1, str(model), str(base))
    summary = out.result() if hasattr(out, "result") else out
    assert summary["n_prompts"] == 5 and summary["n_repeats"] == 2
    assert summary["n_errors"] == 2 and summary["n"] == 8  # the unanswered prompt, in both repeats
    judgments = pl.read_parquet(summary["judgments"])
    failed = judgments.filter(pl.col("preference").is_null())
    assert failed["prompt_id"].to_list() == [missing, missing]
    assert failed["error"].to_list() == ["model produced no answer"] * 2
