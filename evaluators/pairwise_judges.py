"""Pairwise judges for win rates, by name: ``rules`` and the LLM pairwise judges of issue 5.

Why a registry: ``prefwork winrate --judge NAME`` must work with the deterministic rule
judge today and with any LLM pairwise judge (``data/judges/<name>`` of kind ``pairwise``,
run through ``evaluators.judges.JudgeSession``) without the evaluation code knowing which.
Every judge turns two candidates tables (candidate_id = repeat) into a JUDGMENTS table.
An unknown name is an error that lists the valid ones.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import polars as pl


class PairwiseJudge(Protocol):
    """Judges model answers against baseline answers of the same (prompt_id, candidate_id).

    ``judge`` gets two candidates tables (candidate_id = repeat) and returns a JUDGMENTS
    table; ``judge_repeat`` asks for an independent re-judgment (a new judge seed).
    ``deterministic`` judges give the same verdicts every time (re-judging is pointless).
    """

    name: str
    deterministic: bool

    def judge(self, model: pl.DataFrame, baseline: pl.DataFrame, *, judge_repeat: int = 0) -> pl.DataFrame: ...


class RulesPairwiseJudge:
    """The rule judge, pairwise: the answer passing the larger share of its prompt's rules wins."""

    name = "rules"
    deterministic = True

    def __init__(self, **opts: Any):
        if opts:
            raise ValueError(f"the rules judge takes no options (got {', '.join(sorted(opts))})")

    def judge(self, model: pl.DataFrame, baseline: pl.DataFrame, *, judge_repeat: int = 0) -> pl.DataFrame:
        from prefwork.evaluators.pairwise import judgments_from_scores
        from prefwork.evaluators.rules import score_candidates

        return judgments_from_scores(model, score_candidates(model), baseline, score_candidates(baseline), self.name)


class LLMPairwiseJudge:
    """An LLM pairwise judge of ``evaluators.judges`` (``data/judges/<name>``, kind ``pairwise``).

    Options: ``base_url``, ``model``, ``structured``, ``orders``, ``cache`` (SQLite path),
    ``http_client`` (programmatic: a custom transport) and any
    ``ClientOptions`` field (``concurrency``, ``timeout``, ``max_cost`` ...); string values
    (from the CLI) are converted to the field's type. Re-judgment ``j`` shifts the judge's
    seed, so it is a new call rather than a cache hit of judgment 0. All calls run on one
    event loop of this object, so the session's HTTP client (bound to its loop) and its
    usage counts live across repeats and re-judgments; ``close`` releases them.
    """

    deterministic = False
    SESSION_OPTS = ("model", "structured", "orders", "cache", "http_client")
    REJUDGE_SEED_STRIDE = 100_003

    def __init__(self, name: str, **opts: Any):
        import dataclasses
        import typing

        from prefwork.evaluators.judge_client import ClientOptions
        from prefwork.evaluators.judges import JudgeSession

        hints = typing.get_type_hints(ClientOptions)
        client_keys = [f.name for f in dataclasses.fields(ClientOptions)]
        unknown = sorted(set(opts) - set(client_keys) - set(self.SESSION_OPTS))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for judge {name!r} "
                             f"(valid: {', '.join(sorted([*client_keys, *self.SESSION_OPTS]))})")

        def conv(key: str, value: Any) -> Any:
            kind = [t for t in typing.get_args(hints[key]) if t is not type(None)] or [hints[key]]
            return kind[0](value) if isinstance(value, str) and kind[0] in (int, float) else value

        client = ClientOptions(**{k: conv(k, v) for k, v in opts.items() if k in client_keys})
        session = {k: opts.get(k) for k in self.SESSION_OPTS}
        self.name = name
        self.session = JudgeSession(client, cache=session.pop("cache"), **session)
        self.base_seed = self.session.spec(name).seed

    def judge(self, model: pl.DataFrame, baseline: pl.DataFrame, *, judge_repeat: int = 0) -> pl.DataFrame:
        self.session.overrides["seed"] = self.base_seed + self.REJUDGE_SEED_STRIDE * judge_repeat
        return self.session.pairwise(self.name, model, baseline)

    def usage(self) -> dict:
        return self.session.usage()

    def close(self) -> None:
        self.session.close()


PAIRWISE_JUDGES: dict[str, Callable[..., PairwiseJudge]] = {"rules": RulesPairwiseJudge}


def register_pairwise_judge(name: str, factory: Callable[..., PairwiseJudge]) -> None:
    """Make ``--judge name`` available; ``factory(**opts)`` builds the judge."""
    PAIRWISE_JUDGES[name] = factory


def _llm_pairwise_names() -> list[str]:
    """Judges in ``data/judges`` whose kind is ``pairwise`` (none when that module is absent)."""
    try:
        from prefwork.evaluators.judges import RULES_NAME, get_spec, judge_names
    except ImportError:
        return []
    return [n for n in judge_names() if n != RULES_NAME and get_spec(n).kind == "pairwise"]


def pairwise_judge_names() -> list[str]:
    return sorted(set(PAIRWISE_JUDGES) | set(_llm_pairwise_names()))


def make_pairwise_judge(name: str, **opts: Any) -> PairwiseJudge:
    """Build the named pairwise judge; an unknown name is an error listing the valid ones."""
    if name in PAIRWISE_JUDGES:
        return PAIRWISE_JUDGES[name](**opts)
    if name in _llm_pairwise_names():
        return LLMPairwiseJudge(name, **opts)
    raise ValueError(f"unknown pairwise judge {name!r} (valid: {', '.join(pairwise_judge_names())})")
