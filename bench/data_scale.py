"""Data-stage throughput at scale: pairs + chunks + win-rate statistics over 1M candidate rows.

    python bench/data_scale.py            # 125k prompts x 8 candidates, texts of ~300 chars
    python bench/data_scale.py --smoke    # 2k prompts (CI)

Synthetic data (seeded): candidates + scores (1M rows) -> ``build_pairs`` -> ``make_chunks``
(judge margin; 4 chunks) -> ``summarize`` over 1M pairwise judgments (125k prompts x 8
repeats, 1,000-draw prompt bootstrap). Each implementation runs in its own subprocess so its
peak RSS is read from outside (``ru_maxrss`` of the waited child). The baseline, run side by
side, is the same work written as plain Python loops over rows (what a script without
polars does); it is measured on a 1/10 slice and reported per row, so the ratio compares
rows/s. Targets (issue 3): <= 20 s and <= 2 GiB for prefwork at full size.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def make_data(prompts: int, n: int, chars: int, seed: int = 0):
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    rows = prompts * n
    pid = pl.Series("prompt_id", [f"p{i:07d}" for i in range(prompts)]).to_frame()
    base = (pid.join(pl.DataFrame({"candidate_id": np.arange(n, dtype=np.int64)}), how="cross"))
    filler = "lorem ipsum dolor sit amet " * (chars // 27 + 1)
    lens = rng.integers(chars // 2, chars * 3 // 2, rows)
    cands = base.with_columns(
        prompt=pl.lit("Write a slogan for a shop in exactly 4 words."),
        text=pl.Series([filler[:k] for k in lens]), model=pl.lit("bench"), seed=pl.lit(0, pl.Int64),
        finish_reason=pl.lit("stop"), num_tokens=pl.Series(lens // 4, dtype=pl.Int64))
    scores = base.with_columns(judge=pl.lit("rules"), score=pl.Series(rng.integers(0, 5, rows) / 4.0),
                               detail=pl.lit("{}"), error=pl.lit(None, pl.String))
    pref = rng.choice([0.0, 0.5, 1.0], rows, p=[0.35, 0.2, 0.45])
    judgments = base.rename({"candidate_id": "repeat"}).with_columns(
        model=pl.lit("a"), baseline=pl.lit("b"), judge=pl.lit("rules"), model_text=pl.lit("x"),
        baseline_text=pl.lit("y"), model_len=pl.Series(lens, dtype=pl.Int64),
        baseline_len=pl.Series(lens[::-1].copy(), dtype=pl.Int64), preference=pl.Series(pref),
        error=pl.lit(None, pl.String))
    return cands, scores, judgments


def work_prefwork(cands, scores, judgments) -> dict:
    from prefwork.evaluators.winrate import summarize
    from prefwork.pipeline.curriculum import ChunkConfig, make_chunks
    from prefwork.pipeline.pairs import build_pairs

    pairs, stats = build_pairs(cands, scores)
    chunks = make_chunks(pairs, ChunkConfig(chunks=4, method="judge_margin"))
    summary = summarize(judgments, n_boot=1000)
    return {"pairs": stats.pairs, "chunks": int(chunks["chunk"].n_unique()), "win_rate": summary.win_rate}


def work_python(cands, scores, judgments) -> dict:
    """The same three steps as plain Python loops over rows (the baseline)."""
    import random
    import statistics

    score = {(r["prompt_id"], r["candidate_id"]): r["score"] for r in scores.iter_rows(named=True)}
    best: dict[str, list] = {}
    for r in cands.iter_rows(named=True):
        s = score[(r["prompt_id"], r["candidate_id"])]
        b = best.setdefault(r["prompt_id"], [s, r["candidate_id"], r["text"], s, r["candidate_id"], r["text"]])
        if s > b[0] or (s == b[0] and r["candidate_id"] < b[1]):
            b[0:3] = [s, r["candidate_id"], r["text"]]
        if s < b[3] or (s == b[3] and r["candidate_id"] < b[4]):
            b[3:6] = [s, r["candidate_id"], r["text"]]
    pairs = sorted(((b[0] - b[3], p) for p, b in best.items() if b[0] > b[3]), reverse=True)
    chunk = {p: i * 4 // len(pairs) for i, (_, p) in enumerate(pairs)}
    per_repeat: dict[int, list] = {}
    by_prompt: dict[str, list] = {}
    for r in judgments.iter_rows(named=True):
        per_repeat.setdefault(r["repeat"], []).append(r["preference"])
        by_prompt.setdefault(r["prompt_id"], []).append(r["preference"])
    rates = [sum(v) / len(v) for v in per_repeat.values()]
    prompts = list(by_prompt.values())
    rng = random.Random(0)
    for _ in range(1000):  # prompt bootstrap
        draw = [prompts[rng.randrange(len(prompts))] for _ in range(len(prompts))]
        sum(map(sum, draw)) / sum(map(len, draw))
    return {"pairs": len(pairs), "chunks": len(set(chunk.values())), "win_rate": statistics.mean(rates)}


def child(impl: str, prompts: int, n: int, chars: int) -> None:
    data = make_data(prompts, n, chars)
    t0 = time.perf_counter()
    out = (work_prefwork if impl == "prefwork" else work_python)(*data)
    print(json.dumps({"seconds": time.perf_counter() - t0, **out}))


def run_child(impl: str, prompts: int, n: int, chars: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, __file__, "--child", impl, "--prompts", str(prompts), "--n", str(n),
                           "--chars", str(chars)], capture_output=True, text=True, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over waited children so far
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["peak_rss_gib"] = peak_kib / 2**20 if peak_kib > before else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="2,000 prompts instead of 125,000 (CI)")
    ap.add_argument("--prompts", type=int, default=125_000)
    ap.add_argument("--n", type=int, default=8, help="candidates per prompt (= repeats of the judgments)")
    ap.add_argument("--chars", type=int, default=300, help="mean text length")
    ap.add_argument("--child", choices=["prefwork", "python"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    prompts = 2_000 if args.smoke else args.prompts
    if args.child:
        return child(args.child, prompts, args.n, args.chars)
    rows = prompts * args.n
    # prefwork first: ru_maxrss of children is a running max, so the larger baseline goes second
    ours = run_child("prefwork", prompts, args.n, args.chars)
    base_prompts = max(prompts // 10, 100)
    base = run_child("python", base_prompts, args.n, args.chars)
    ours_rps, base_rps = rows / ours["seconds"], base_prompts * args.n / base["seconds"]
    print(f"rows: {rows:,} candidates ({prompts:,} prompts x {args.n}), {rows:,} judgments")
    print(f"prefwork (polars): {ours['seconds']:.2f} s, peak RSS {ours['peak_rss_gib']:.2f} GiB, "
          f"{ours_rps:,.0f} rows/s, pairs {ours['pairs']:,}, win rate {ours['win_rate']:.4f}")
    print(f"baseline (python loops, {base_prompts * args.n:,} rows): {base['seconds']:.2f} s, {base_rps:,.0f} rows/s")
    print(f"speed ratio prefwork/baseline (rows/s): {ours_rps / base_rps:.1f}x")
    if not args.smoke:
        ok = ours["seconds"] <= 20 and (ours["peak_rss_gib"] or 0) <= 2
        print(f"targets (<= 20 s, <= 2 GiB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
