"""Pair building (ties, drops, determinism) and easy-to-hard chunks (ordering, sizes)."""
from __future__ import annotations

import polars as pl
import pytest

from prefwork.pipeline.curriculum import ChunkConfig, make_chunks
from prefwork.pipeline.pairs import PairConfig, build_pairs
from prefwork.pipeline.schemas import SchemaError


def _tables(scores: dict[str, list], texts: dict[str, list] | None = None, errors: dict | None = None):
    cand_rows, score_rows = [], []
    for pid, ss in scores.items():
        for cid, s in enumerate(ss):
            text = texts[pid][cid] if texts else f"{pid}-{cid}"
            cand_rows.append({"prompt_id": pid, "prompt": f"prompt {pid}", "candidate_id": cid, "text": text,
                              "model": "m", "seed": cid, "finish_reason": "stop", "num_tokens": 1})
            err = (errors or {}).get((pid, cid))
            score_rows.append({"prompt_id": pid, "candidate_id": cid, "judge": "rules",
                               "score": None if err else s, "detail": "{}", "error": err})
    return pl.DataFrame(cand_rows), pl.DataFrame(score_rows, schema_overrides={"score": pl.Float64, "error": pl.String})


def test_best_vs_worst_with_ties_broken_by_lowest_id_not_length():
    # prompt a: ids 1 and 2 tie for best (1.0): id 1 wins even though id 2 is longer;
    #           ids 0 and 3 tie for worst (0.0): id 0 wins.
    c, s = _tables({"a": [0.0, 1.0, 1.0, 0.0]}, texts={"a": ["w", "b", "a much longer best answer", "zz"]})
    pairs, stats = build_pairs(c, s)
    row = pairs.row(0, named=True)
    assert (row["chosen_id"], row["rejected_id"], row["chosen"], row["rejected"]) == (1, 0, "b", "w")
    assert (row["chosen_score"], row["rejected_score"], row["margin"]) == (1.0, 0.0, 1.0)
    assert stats.pairs == 1 and stats.mean_chosen_len == 1.0 and stats.mean_rejected_len == 1.0


def test_all_tied_prompts_are_dropped_and_counted():
    c, s = _tables({"a": [0.5, 0.5, 0.5], "b": [0.2, 0.9, 0.4]})
    pairs, stats = build_pairs(c, s)
    assert pairs["prompt_id"].to_list() == ["b"]
    assert (stats.prompts, stats.pairs, stats.dropped_all_tied, stats.dropped_min_margin) == (2, 1, 1, 0)


def test_min_margin_drops_close_pairs():
    c, s = _tables({"a": [0.5, 0.75], "b": [0.0, 1.0]})
    pairs, stats = build_pairs(c, s, PairConfig(min_margin=0.25))
    assert pairs["prompt_id"].to_list() == ["b"] and stats.dropped_min_margin == 1


def test_failed_judgments_take_no_part():
    # candidate 2 of a failed (null score): it cannot be chosen or rejected; b has no valid score at all.
    c, s = _tables({"a": [0.2, 0.8, 1.0], "b": [0.1]}, errors={("a", 2): "timeout", ("b", 0): "garbage"})
    pairs, stats = build_pairs(c, s)
    assert pairs.select("chosen_id", "rejected_id").row(0) == (1, 0)
    assert stats.dropped_unscored == 1


def test_pairs_are_deterministic_under_row_order():
    c, s = _tables({p: [i % 3 / 2, (i + 1) % 3 / 2, 0.25] for i, p in enumerate("abcdefgh")})
    first, _ = build_pairs(c, s)
    again, _ = build_pairs(c.reverse(), s.sample(fraction=1.0, shuffle=True, seed=3))
    assert first.equals(again)


def test_pairs_per_prompt_pairs_best_with_the_worst_distinct_answers():
    # a: best id 1 (1.0); rejected worst first: id 3 (0.0), then id 0 (0.25) and id 4 (0.25, same text as id 0:
    # a duplicate, skipped), then id 2 (0.5, under the margin of 0.5). b: all tied.
    c, s = _tables({"a": [0.25, 1.0, 0.5, 0.0, 0.25], "b": [0.5, 0.5]},
                   texts={"a": ["x", "best", "half", "bad", "x"], "b": ["p", "q"]})
    pairs, stats = build_pairs(c, s, PairConfig(min_margin=0.5, pairs_per_prompt=3))
    assert pairs.select("chosen_id", "rejected_id").rows() == [(1, 3), (1, 0)]
    assert pairs["margin"].to_list() == [1.0, 0.75]
    assert (stats.pairs, stats.dropped_all_tied, stats.dropped_min_margin) == (2, 1, 0)
    one, _ = build_pairs(c, s, PairConfig(min_margin=0.5))
    assert one.select("chosen_id", "rejected_id").rows() == [(1, 3)]  # K = 1 is best vs worst
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        build_pairs(c, s, PairConfig(pairs_per_prompt=0))


def _pairs(n: int) -> pl.DataFrame:
    c, s = _tables({f"p{i:02d}": [0.0, (i + 1) / n] for i in range(n)})
    return build_pairs(c, s)[0]


def test_chunks_easy_to_hard_by_logp_margin_with_balanced_sizes():
    pairs = _pairs(7)
    margin = pl.Series([float(i) for i in range(7)])  # pair i has margin i: larger = easier
    out = make_chunks(pairs, ChunkConfig(chunks=3), logp_margin=margin)
    # row r of 7 goes to chunk floor(3r/7): rows 0-2 -> 0, 3-4 -> 1, 5-6 -> 2
    assert out.group_by("chunk").len().sort("chunk")["len"].to_list() == [3, 2, 2]
    assert out["difficulty"].is_sorted()
    assert out.filter(pl.col("chunk") == 0)["prompt_id"].to_list() == ["p06", "p05", "p04"]  # largest margins first
    assert out["chunk"].max() == 2


def test_chunks_judge_margin_and_random():
    pairs = _pairs(6)
    judge = make_chunks(pairs, ChunkConfig(chunks=2, method="judge_margin"))
    assert judge.filter(pl.col("chunk") == 0)["margin"].min() >= judge.filter(pl.col("chunk") == 1)["margin"].max()
    r1 = make_chunks(pairs, ChunkConfig(chunks=2, method="random", seed=1))
    assert r1.equals(make_chunks(pairs, ChunkConfig(chunks=2, method="random", seed=1)))
    assert set(r1["prompt_id"]) == set(pairs["prompt_id"])


def test_chunk_errors_are_clear():
    pairs = _pairs(3)
    with pytest.raises(ValueError, match="valid: logp_margin, judge_margin, random"):
        make_chunks(pairs, ChunkConfig(method="length"))
    with pytest.raises(SchemaError, match="logp_margin"):
        make_chunks(pairs, ChunkConfig())
    with pytest.raises(ValueError, match="chunks must be >= 1"):
        make_chunks(pairs, ChunkConfig(chunks=0), logp_margin=pl.Series([0.0] * 3))
