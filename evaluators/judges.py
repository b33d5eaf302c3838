"""The judges: one protocol and ``make_judge``, the way to get any judge by name.

A judge turns answers into numbers in two ways (contracts in ``pipeline.schemas``)::

    judge = make_judge("rules")
    judge.score(candidates)                      # SCORES: one row per answer
    judge.compare(model_cands, baseline_cands)   # JUDGMENTS: one row per (prompt, repeat) both sides answered

A judge that scores answers one by one compares by those scores (``pairwise.judgments_from_scores``);
the LLM pairwise judge compares directly and does not score. A win rate goes through
``evaluators.evaluate.evaluate_pair``, which also records the pairs a side did not answer.

Names and the one place a new judge kind registers: ``evaluators.registry`` (``rules`` and ``ifeval``
there; LLM judges are data in ``data/judges/<name>``; weighted lists ``"math_1to5:0.7,rules:0.3"``).
LLM judges run in a ``JudgeSession`` (``evaluators.session``), which holds the one client
(``evaluators.llm_client``), the answer cache (``evaluators.judge_cache``) and usage per judge::

    with JudgeSession(ClientOptions(base_url="http://127.0.0.1:8000/v1"), cache="runs/.cache/judges.sqlite") as s:
        scores = s.judge("math_1to5").score(candidates)
        s.write_usage(run_dir)
"""
from __future__ import annotations

from typing import Any, Protocol

import polars as pl

from prefwork.evaluators.registry import JUDGES, get_spec
from prefwork.evaluators.session import JudgeSession, SessionJudge


class Judge(Protocol):
    """What every judge offers; ``deterministic`` judges give the same verdicts every time (no re-judging)."""

    name: str
    deterministic: bool

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """A candidates table (prompt_id, prompt, candidate_id, text; optional task, meta, reference) -> SCORES."""

    def compare(self, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, *,
                judge_repeat: int = 0) -> pl.DataFrame:
        """Model vs baseline answers of the same (prompt_id, candidate_id = repeat) -> JUDGMENTS.

        ``judge_repeat`` > 0 asks for an independent re-judgment (new judge seeds) of the same answers.
        """


def make_judge(name: str, *, session: JudgeSession | None = None, **opts: Any) -> Judge:
    """The judge called ``name``; an unknown name is an error that lists the valid ones.

    A registered judge gets ``opts`` through its factory. An LLM judge (judge directory or weighted
    list) runs in ``session``, or in a session of its own built from ``opts`` (``ClientOptions``
    fields and ``JudgeSession`` options; strings from the CLI are converted), which ``close`` ends.
    """
    if name in JUDGES:
        return JUDGES[name](**opts)
    get_spec(name)
    if session is not None:
        if opts:
            raise ValueError(f"judge {name!r} runs in the given session; options go to the session")
        return session.judge(name)
    return SessionJudge(JudgeSession.from_options(name, opts), name, owns_session=True)
