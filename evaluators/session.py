"""``JudgeSession``: one run's LLM judges sharing one client, one answer cache and one event loop.

The client (``evaluators.llm_client``) holds the rate limits, retries and the cost budget; the cache
(``evaluators.judge_cache``) makes a re-run send nothing; usage (requests, tokens, cost) is kept per
judge. ``session.judge(name)`` is that judge as a ``evaluators.judges.Judge``; ``score``/``compare``
(and their async forms) take the judge by name. Registered judges (``rules``, ``ifeval``) need no
client and run as themselves, so a combined list may mix them with LLM judges.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Callable

import polars as pl

from prefwork.evaluators.combined import Component, combine, scores_frame
from prefwork.evaluators.judge_cache import JudgeCache
from prefwork.evaluators.registry import JUDGES, get_spec
from prefwork.evaluators.llm_client import ClientOptions, JudgeClient
from prefwork.evaluators.llm_judge import JUDGES_DIR, NOT_JUDGED_BUDGET, JudgeSpec
from prefwork.evaluators.pairwise import LLMPairwiseJudge, judgments_from_scores, pair_up, to_judgments
from prefwork.evaluators.rubric import RubricJudge
from prefwork.pipeline.schemas import SchemaError

#: Re-judgment j of the same answers shifts the judge's seeds by j x this, so it is a new call, not a cache hit.
REJUDGE_SEED_STRIDE = 100_003
SESSION_OPTIONS = ("model", "structured", "orders", "cache", "http_client", "listwise", "rule_cap")


def _rows(df: pl.DataFrame, repeat: int) -> list[dict]:
    cols = [c for c in ("prompt_id", "prompt", "candidate_id", "text", "reference", "task", "meta") if c in df.columns]
    return [{**r, "repeat": repeat} for r in df.select(cols).to_dicts()]


class JudgeSession:
    """A shared rate-limited client, the SQLite answer cache, and usage per judge."""

    def __init__(self, options: ClientOptions | None = None, *, cache: str | Path | None = None,
                 model: str | None = None, structured: str | None = None, judges_dir: Path = JUDGES_DIR,
                 http_client: Any = None, listwise: bool = False, orders: str | None = None,
                 rule_cap: float | None = None):
        self.options = options or ClientOptions()
        self.cache = JudgeCache(cache)
        self.overrides = {"model": model, "structured": structured}
        self.judges_dir, self.listwise, self.orders, self.rule_cap = Path(judges_dir), listwise, orders, rule_cap
        self._http_client = http_client
        self.client: JudgeClient | None = None
        self.stopped_by_budget = False
        self._runner: asyncio.Runner | None = None

    @classmethod
    def from_options(cls, name: str, opts: dict[str, Any]) -> "JudgeSession":
        """A session from flat options (``--judge-opt KEY=VALUE``): ``ClientOptions`` fields and session options."""
        hints = typing.get_type_hints(ClientOptions)
        client_keys = [f.name for f in dataclasses.fields(ClientOptions)]
        unknown = sorted(set(opts) - set(client_keys) - set(SESSION_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for judge {name!r} "
                             f"(valid: {', '.join(sorted([*client_keys, *SESSION_OPTIONS]))})")

        def conv(key: str, value: Any) -> Any:
            kind = [t for t in typing.get_args(hints[key]) if t is not type(None)] or [hints[key]]
            return kind[0](value) if isinstance(value, str) and kind[0] in (int, float) else value
        client = ClientOptions(**{k: conv(k, v) for k, v in opts.items() if k in client_keys})
        return cls(client, **{k: v for k, v in opts.items() if k in SESSION_OPTIONS})

    # -- setup ----------------------------------------------------------------------------
    def spec(self, name: str) -> JudgeSpec:
        spec = get_spec(name, self.judges_dir, self.rule_cap)
        return spec.with_overrides(**self.overrides) if spec.kind in ("rubric", "pairwise") else spec

    def judge(self, name: str):
        """The judge ``name`` as an ``evaluators.judges.Judge`` (a registered one as itself)."""
        return JUDGES[name]() if name in JUDGES else SessionJudge(self, name)

    async def client_for(self, spec: JudgeSpec) -> tuple[JudgeClient, JudgeSpec]:
        """The session's client (built on first use) and ``spec`` with its model filled in (the server's first)."""
        if self.client is None:
            self.client = JudgeClient(self.options, base_url=self.options.base_url or spec.base_url,
                                      http_client=self._http_client)
        if not spec.model:
            spec = spec.with_overrides(model=await self.client.first_model())
            self.overrides["model"] = spec.model
        return self.client, spec

    # -- scores ---------------------------------------------------------------------------
    async def ascore(self, name: str, candidates: pl.DataFrame, *, repeat: int = 0,
                     progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """A candidates table (prompt_id, prompt, candidate_id, text; optional reference, task, meta) -> SCORES."""
        for col in ("prompt_id", "candidate_id", "text"):
            if col not in candidates.columns:
                raise SchemaError(None, None, col, "missing column for a judge (needs prompt_id, prompt, candidate_id, text)")
        spec = self.spec(name)
        if spec.kind == "registered":
            out = JUDGES[name]().score(candidates)
        elif spec.kind == "combined":
            out = await self._combined(spec, candidates, repeat)
        elif spec.kind == "rubric":
            client, spec = await self.client_for(spec)
            results = await RubricJudge(spec, listwise=self.listwise).score_rows(
                client, self.cache, _rows(candidates, repeat), progress)
            self.stopped_by_budget |= any(r[2] == NOT_JUDGED_BUDGET for r in results)
            return scores_frame(candidates, spec.name, results)
        else:
            raise ValueError(f"judge {name!r} is a {spec.kind} judge; it compares answers (use it for win rates "
                             "or `judge audit`), it does not score them one by one")
        if progress:
            progress(candidates.height)
        return out

    async def _combined(self, spec: JudgeSpec, candidates: pl.DataFrame, repeat: int) -> pl.DataFrame:
        parts = []
        for name, weight in spec.components:
            sub = self.spec(name)
            own = JUDGES[name]() if name in JUDGES else None
            parts.append(Component(name, weight, getattr(own, "score_range", None) or sub.score_range,
                                   await self.ascore(name, candidates, repeat=repeat),
                                   applies=getattr(own, "applies", None), caps=getattr(own, "caps", False)))
        return combine(spec.name, candidates, parts, spec.rule_cap)

    # -- judgments ------------------------------------------------------------------------
    async def acompare(self, name: str, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, *,
                       judge_repeat: int = 0, with_detail: bool = False,
                       progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """Model vs baseline for every (prompt_id, repeat = candidate_id) on both sides -> JUDGMENTS.

        A pairwise judge asks its model about each pair; any other judge scores both sides and
        compares the scores. ``judge_repeat`` shifts the judge's seeds (an independent re-judgment).
        """
        spec = self.spec(name)
        if spec.kind != "pairwise":
            shift = REJUDGE_SEED_STRIDE * judge_repeat
            m = await self.ascore(name, model_cands, repeat=shift, progress=progress)
            b = await self.ascore(name, baseline_cands, repeat=shift, progress=progress)
            return judgments_from_scores(model_cands, m, baseline_cands, b, spec.name)
        client, spec = await self.client_for(spec.with_overrides(seed=spec.seed + REJUDGE_SEED_STRIDE * judge_repeat))
        both = pair_up(model_cands, baseline_cands)
        results = await LLMPairwiseJudge(spec, self.orders).judge_rows(client, self.cache, both.to_dicts(), progress)
        self.stopped_by_budget |= any(r[2] == NOT_JUDGED_BUDGET for r in results)
        out = to_judgments(both, spec.name, pl.Series([r[0] for r in results], dtype=pl.Float64),
                           pl.Series([r[2] for r in results], dtype=pl.String))
        if with_detail:
            out = out.with_columns(pl.Series("detail", [json.dumps(r[1], ensure_ascii=False) for r in results], dtype=pl.String))
        return out

    # -- sync wrappers, accounting, lifetime ------------------------------------------------
    def score(self, name: str, candidates: pl.DataFrame, **kw) -> pl.DataFrame:
        return self.run(self.ascore(name, candidates, **kw))

    def compare(self, name: str, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, **kw) -> pl.DataFrame:
        return self.run(self.acompare(name, model_cands, baseline_cands, **kw))

    def run(self, coro):
        """Run one of this session's coroutines from sync code.

        The session keeps one event loop (``asyncio.Runner``) open until ``close``: the HTTP
        client, its connection pool and the rate limiters belong to a loop, so sync calls that
        each made a loop of their own would rebuild them every call.
        """
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coro)

    async def aclose(self) -> None:
        """Close the HTTP client from async code (the loop it was used in)."""
        if self.client is not None:
            await self.client.close()

    def usage(self) -> dict[str, Any]:
        per = {k: v.as_dict() for k, v in (self.client.usage.items() if self.client else [])}
        total = {k: sum(u[k] for u in per.values()) for k in next(iter(per.values()), {})}
        return {"judges": per, "total": total, "stopped_by_budget": self.stopped_by_budget,
                "max_cost_usd": self.options.max_cost or None}

    def write_usage(self, run_dir: str | Path) -> Path:
        from prefwork.pipeline.store import write_json
        return write_json(Path(run_dir) / "usage.json", self.usage())

    def close(self) -> None:
        """Close the HTTP client (when sync calls opened it), the session's loop and the cache."""
        try:
            if self._runner is not None:
                self._runner.run(self.aclose())
        finally:
            if self._runner is not None:
                self._runner.close()
                self._runner = None
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SessionJudge:
    """An LLM judge (rubric, pairwise or combined) of a session, as an ``evaluators.judges.Judge``."""

    deterministic = False

    def __init__(self, session: JudgeSession, name: str, *, owns_session: bool = False):
        self.session, self.name, self.owns_session = session, name, owns_session

    def score(self, candidates: pl.DataFrame, *, repeat: int = 0) -> pl.DataFrame:
        return self.session.score(self.name, candidates, repeat=repeat)

    def compare(self, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, *,
                judge_repeat: int = 0) -> pl.DataFrame:
        return self.session.compare(self.name, model_cands, baseline_cands, judge_repeat=judge_repeat)

    def usage(self) -> dict:
        return self.session.usage()

    def close(self) -> None:
        """End the session when this judge built it (``make_judge`` with options)."""
        if self.owns_session:
            self.session.close()
