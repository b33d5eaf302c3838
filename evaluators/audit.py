"""Judge audit: how far to trust a judge, measured on a set of answer pairs (and on gold grades).

``audit_pairs`` runs a judge on pairs (prompt, a, b; optional ``label``, ``task``/``meta``,
``reference``) and reports:

- position consistency: share of (pair, repeat) whose verdict is the same with a shown first and with
  b shown first (pairwise judges; a pointwise grader cannot see the order, so it is reported n/a),
  and the share of single-order calls won by whichever answer was shown first;
- length bias: share of decided pairs (not ties) won by the longer answer (0.5 = no bias);
- self-consistency: share of pairs with the same final verdict on every repeat (needs repeats >= 2;
  each repeat has its own seed, hence its own cache entry, so the calls are really made);
- agreement with labels (``label``: "A", "B", "tie" or 1/0/0.5 from a's side) and with the rule
  judge (pairs with ``task`` and ``meta``, where the rule scores differ).

``audit_gold`` grades a rubric judge's hand-graded set: exact agreement, within one point, mean
absolute error, and agreement on "correct" (score >= the judge's ``correct_threshold``).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from prefwork.evaluators.pairwise import LLMPairwiseJudge
from prefwork.evaluators.rubric import RubricJudge
from prefwork.evaluators.session import JudgeSession

LABELS = {"a": 1.0, "b": 0.0, "tie": 0.5, "1": 1.0, "0": 0.0, "0.5": 0.5, "1.0": 1.0, "0.0": 0.0}


def _label(v: Any) -> float | None:
    if v is None:
        return None
    key = str(v).strip().lower()
    if key not in LABELS:
        raise ValueError(f"pair label {v!r} is not one of A, B, tie, 1, 0, 0.5")
    return LABELS[key]


def load_table(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    from prefwork.pipeline.store import read_jsonl  # UTF-8 with or without a BOM; errors name file and line

    return pl.DataFrame(read_jsonl(path), infer_schema_length=None)


def load_pairs(path: str | Path) -> pl.DataFrame:
    """A pairs file (.jsonl or .parquet) with prompt, a, b and optional prompt_id, label, task, meta, reference."""
    df = load_table(path)
    for col in ("prompt", "a", "b"):
        if col not in df.columns:
            raise ValueError(f"{path}: a pairs file needs columns prompt, a, b (missing {col!r}; "
                             f"has {', '.join(df.columns)})")
    if "prompt_id" not in df.columns:
        df = df.with_columns(pl.col("prompt").map_elements(lambda p: hashlib.sha256(p.encode()).hexdigest()[:16],
                                                           return_dtype=pl.String).alias("prompt_id"))
    if "label" in df.columns:
        df = df.with_columns(pl.Series("label", [_label(v) for v in df["label"].to_list()], dtype=pl.Float64))
    return df


def _rate(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _counts(values) -> dict[str, int]:
    """How often each verdict or score was given, e.g. {"1.0": 33, "2.0": 3}: a judge that gives one
    answer to everything shows it here at a glance."""
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def _constant_agreement(truth: list) -> float | None:
    """The agreement a judge gets by giving every item the same answer (the most common true one):
    the bar an agreement figure has to clear before it says anything about the judge."""
    truth = [t for t in truth if t is not None]
    return max(truth.count(t) for t in set(truth)) / len(truth) if truth else None


def _pref(sa: float, sb: float) -> float:
    return 1.0 if sa > sb else 0.0 if sa < sb else 0.5


async def _pairwise_calls(judge: LLMPairwiseJudge, session, client, pair: dict, repeat: int) -> dict:
    ab, ba = await asyncio.gather(judge.ask(client, session.cache, pair["prompt"], pair["a"], pair["b"], repeat),
                                  judge.ask(client, session.cache, pair["prompt"], pair["b"], pair["a"], repeat))
    err = ab.error or ba.error
    if err:
        return {"error": err}
    v1, v2 = ab.value, 1.0 - ba.value
    return {"a_first": v1, "b_first": v2, "consistent": v1 == v2, "preference": v1 if v1 == v2 else 0.5,
            "first_won": [v1 == 1.0, ba.value == 1.0] if 0.5 not in (v1, ba.value) else []}


async def _rubric_calls(judge: RubricJudge, session, client, pair: dict, repeat: int) -> dict:
    ref = pair.get("reference")
    (sa, _, ea), (sb, _, eb) = await asyncio.gather(
        judge.grade(client, session.cache, pair["prompt"], pair["a"], ref, repeat),
        judge.grade(client, session.cache, pair["prompt"], pair["b"], ref, repeat))
    if ea or eb:
        return {"error": ea or eb}
    return {"a_score": sa, "b_score": sb, "preference": _pref(sa, sb)}


async def audit_pairs_async(session: JudgeSession, name: str, pairs: pl.DataFrame, repeats: int = 1) -> tuple[dict, pl.DataFrame]:
    spec = session.spec(name)
    if spec.kind not in ("pairwise", "rubric"):
        raise ValueError(f"judge audit needs a pairwise or rubric judge; {name!r} is {spec.kind}")
    client, spec = await session.client_for(spec)
    judge = LLMPairwiseJudge(spec, "both") if spec.kind == "pairwise" else RubricJudge(spec)
    calls = _pairwise_calls if spec.kind == "pairwise" else _rubric_calls
    rows = pairs.to_dicts()
    results = await asyncio.gather(*(calls(judge, session, client, r, k) for r in rows for k in range(repeats)))
    per_pair = [results[i * repeats:(i + 1) * repeats] for i in range(len(rows))]

    out_rows, consistent, first_won, longer_won, self_cons, label_ok, rule_ok, failures = [], [], [], [], [], [], [], 0
    for r, reps in zip(rows, per_pair):
        ok = [x for x in reps if "error" not in x]
        failures += len(reps) - len(ok)
        consistent += [x["consistent"] for x in ok if "consistent" in x]
        first_won += [w for x in ok for w in x.get("first_won", [])]
        final = reps[0].get("preference")
        if final is not None and final != 0.5 and len(r["a"]) != len(r["b"]):
            longer_won.append((final == 1.0) == (len(r["a"]) > len(r["b"])))
        if repeats > 1 and len(ok) == repeats:
            self_cons.append(len({x["preference"] for x in ok}) == 1)
        if final is not None and r.get("label") is not None:
            label_ok.append(final == r["label"])
        rule_pref = _rule_preference(r)
        if final is not None and rule_pref is not None:
            rule_ok.append(final == rule_pref)
        out_rows.append({"prompt_id": r["prompt_id"], "preference": final, "label": r.get("label"),
                         "rule_preference": rule_pref, "a_len": len(r["a"]), "b_len": len(r["b"]),
                         "repeats": json.dumps(reps), "error": reps[0].get("error")})
    metrics = {
        "judge": spec.name, "model": spec.model, "kind": spec.kind, "pairs": len(rows), "repeats": repeats,
        "failed_calls": failures,
        "position_consistency": _rate(consistent) if spec.kind == "pairwise" else None,
        "first_position_win_rate": _rate(first_won) if spec.kind == "pairwise" else None,
        "length_bias": _rate(longer_won), "length_bias_n": len(longer_won),
        "self_consistency": _rate(self_cons) if repeats > 1 else None,
        "label_agreement": _rate(label_ok), "label_n": len(label_ok),
        "label_agreement_constant": _constant_agreement([r.get("label") for r in rows]),
        "rule_agreement": _rate(rule_ok), "rule_n": len(rule_ok),
        "verdicts": _counts(x["preference"] for x in (reps[0] for reps in per_pair) if "error" not in x),
    }
    table = pl.DataFrame(out_rows, schema={"prompt_id": pl.String, "preference": pl.Float64, "label": pl.Float64,
                                           "rule_preference": pl.Float64, "a_len": pl.Int64, "b_len": pl.Int64,
                                           "repeats": pl.String, "error": pl.String})
    return metrics, table


def _rule_preference(pair: dict) -> float | None:
    """Rule judge's verdict for a pair with task + meta (None when it does not apply or ties)."""
    from prefwork.evaluators.rules import KNOWN_RULE_TASKS, judge_text

    task, meta = pair.get("task"), pair.get("meta")
    if task not in KNOWN_RULE_TASKS or not meta:
        return None
    try:
        sa, _ = judge_text(task, meta, pair["a"])
        sb, _ = judge_text(task, meta, pair["b"])
    except ValueError:
        return None
    return None if sa == sb else _pref(sa, sb)


async def audit_gold_async(session: JudgeSession, name: str, gold: pl.DataFrame) -> tuple[dict, pl.DataFrame]:
    """Agreement of a rubric judge with hand grades (columns prompt, answer, grade; optional reference)."""
    spec = session.spec(name)
    if spec.kind != "rubric":
        raise ValueError(f"--gold grades need a rubric judge; {name!r} is {spec.kind} (give it --pairs)")
    for col in ("prompt", "answer", "grade"):
        if col not in gold.columns:
            raise ValueError(f"a gold file needs columns prompt, answer, grade (missing {col!r})")
    client, spec = await session.client_for(spec)
    judge = RubricJudge(spec)
    rows = gold.to_dicts()
    got = await asyncio.gather(*(judge.grade(client, session.cache, r["prompt"], r["answer"], r.get("reference"))
                                 for r in rows))
    thr = spec.correct_threshold
    pairs = [(r["grade"], s) for r, (s, _, e) in zip(rows, got) if e is None]
    metrics = {
        "judge": spec.name, "model": spec.model, "gold": len(rows), "failed_calls": len(rows) - len(pairs),
        "exact_agreement": _rate([g == s for g, s in pairs]),
        "within_one": _rate([abs(g - s) <= 1 for g, s in pairs]),
        "mean_abs_error": (sum(abs(g - s) for g, s in pairs) / len(pairs)) if pairs else None,
        "correct_agreement": _rate([(g >= thr) == (s >= thr) for g, s in pairs]) if thr is not None else None,
        "correct_agreement_constant": _constant_agreement([g >= thr for g, _ in pairs]) if thr is not None else None,
        "scores": _counts(s for _, s in pairs),
    }
    table = pl.DataFrame({"id": [str(r.get("id", i)) for i, r in enumerate(rows)],
                          "grade": [float(r["grade"]) for r in rows],
                          "score": pl.Series([s for s, _, _ in got], dtype=pl.Float64),
                          "error": pl.Series([e for _, _, e in got], dtype=pl.String)})
    return metrics, table


def run_audit(session: JudgeSession, name: str, *, pairs: pl.DataFrame | None = None,
              gold: pl.DataFrame | None = None, repeats: int = 1) -> dict[str, Any]:
    """Both audits that have data, on the session's loop: {"pairs": (metrics, table), "gold": (metrics, table)}."""
    async def go():
        out = {}
        if pairs is not None:
            out["pairs"] = await audit_pairs_async(session, name, pairs, repeats)
        if gold is not None:
            out["gold"] = await audit_gold_async(session, name, gold)
        return out
    return session.run(go())
