"""The judge registry (name -> implementation) and ``JudgeSession``, the one way to run a judge.

Names: ``rules`` (the rule judge, ``evaluators.rules``), every ``data/judges/<name>/config.yaml``
(rubric, pairwise and combined judges are data), and ad-hoc combinations written
``"math_1to5:0.7,rules:0.3"``. An unknown name is an error that lists the valid ones.

    from prefwork.evaluators.judges import JudgeSession
    from prefwork.evaluators.judge_client import ClientOptions

    with JudgeSession(ClientOptions(base_url="http://127.0.0.1:8000/v1"), cache="runs/.cache/judges.sqlite",
                      model="my-judge") as s:
        scores = s.score("math_1to5", candidates)                    # SCORES table
        judgments = s.pairwise("pairwise", model_cands, baseline_cands)  # JUDGMENTS table
        s.write_usage(run_dir)                                        # usage.json: tokens, cost per judge

Combined judges normalise each component to 0..1 (rubric: (s - lo) / (hi - lo); rules already are),
take the weighted mean over the components that apply (the rule judge does not apply to a task it has
no rules for), and with ``rule_cap`` set, cap the result at that value when any rule failed. Each
component's own score stays in ``detail``; a failed component fails the row (null score, error set).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

import polars as pl

from prefwork.evaluators.judge_cache import JudgeCache
from prefwork.evaluators.judge_client import ClientOptions, JudgeClient
from prefwork.evaluators.llm_judge import JUDGES_DIR, NOT_JUDGED_BUDGET, JudgeSpec, RubricJudge, load_spec
from prefwork.evaluators.llm_pairwise import PairwiseJudge
from prefwork.pipeline.schemas import JUDGMENTS, SCORES, SchemaError, validate

RULES_NAME = "rules"


def judge_names(judges_dir: Path = JUDGES_DIR) -> list[str]:
    """Every registered judge name: the rule judge and each judge directory."""
    found = sorted(p.parent.name for p in Path(judges_dir).glob("*/config.yaml"))
    return [RULES_NAME] + found


def _parse_combo(name: str) -> list[tuple[str, float]] | None:
    if "," not in name and ":" not in name:
        return None
    parts = []
    for item in name.split(","):
        judge, _, weight = item.strip().partition(":")
        try:
            parts.append((judge.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"bad weight in judge list {name!r} (expected name:weight,name:weight)") from None
    return parts


def get_spec(name: str, judges_dir: Path = JUDGES_DIR, rule_cap: float | None = None) -> JudgeSpec:
    """The spec of a judge name (rules, a judge directory, or an ad-hoc ``a:w,b:w`` combination)."""
    combo = _parse_combo(name)
    if combo is not None:
        for part, _ in combo:
            get_spec(part, judges_dir)  # each component must exist
        return JudgeSpec(name=name, kind="combined", components=tuple(combo), rule_cap=rule_cap)
    if name == RULES_NAME:
        return JudgeSpec(name=RULES_NAME, kind="rules", score_range=(0, 1))
    if ("/" in name or "\\" in name) and (Path(name) / "config.yaml").is_file():  # a judge directory by path
        spec = load_spec(Path(name))
        return spec if rule_cap is None else spec.with_overrides(rule_cap=rule_cap)
    if not (Path(judges_dir) / name / "config.yaml").is_file():
        raise ValueError(f"unknown judge {name!r} (known: {', '.join(judge_names(judges_dir))}; "
                         "or a weighted list like 'math_1to5:0.7,rules:0.3')")
    spec = load_spec(name, judges_dir)
    return spec if rule_cap is None else spec.with_overrides(rule_cap=rule_cap)


def _rows(df: pl.DataFrame) -> list[dict]:
    cols = [c for c in ("prompt_id", "prompt", "candidate_id", "text", "reference", "task", "meta") if c in df.columns]
    return df.select(cols).to_dicts()


def _scores_frame(df: pl.DataFrame, judge: str, results: list[tuple]) -> pl.DataFrame:
    out = pl.DataFrame({
        "prompt_id": df["prompt_id"].cast(pl.String), "candidate_id": df["candidate_id"].cast(pl.Int64),
        "judge": [judge] * df.height,
        "score": pl.Series([r[0] for r in results], dtype=pl.Float64),
        "detail": pl.Series([json.dumps(r[1], ensure_ascii=False) for r in results], dtype=pl.String),
        "error": pl.Series([r[2] for r in results], dtype=pl.String),
    })
    return validate(out, SCORES)


class JudgeSession:
    """One run's judges: a shared rate-limited client, the SQLite answer cache, and usage per judge."""

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

    # -- setup ----------------------------------------------------------------------------
    def spec(self, name: str) -> JudgeSpec:
        spec = get_spec(name, self.judges_dir, self.rule_cap)
        return spec.with_overrides(**self.overrides) if spec.kind in ("rubric", "pairwise") else spec

    async def _client_for(self, spec: JudgeSpec) -> tuple[JudgeClient, JudgeSpec]:
        if self.client is None:
            self.client = JudgeClient(self.options, base_url=self.options.base_url or spec.base_url,
                                      http_client=self._http_client)
        if not spec.model:
            spec = spec.with_overrides(model=await self.client.first_model())
            self.overrides["model"] = spec.model
        return self.client, spec

    # -- pointwise scores -------------------------------------------------------------------
    async def ascore(self, name: str, candidates: pl.DataFrame, *, repeat: int = 0,
                     progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """A candidates table (prompt_id, prompt, candidate_id, text; optional reference, task, meta) -> SCORES."""
        for col in ("prompt_id", "candidate_id", "text"):
            if col not in candidates.columns:
                raise SchemaError(None, None, col, "missing column for a judge (needs prompt_id, prompt, candidate_id, text)")
        spec = self.spec(name)
        if spec.kind == "rules":
            from prefwork.evaluators.rules import score_candidates
            out = score_candidates(candidates)
            if progress:
                progress(candidates.height)
            return out
        if spec.kind == "combined":
            return await self._combined(spec, candidates, repeat, progress)
        if spec.kind != "rubric":
            raise ValueError(f"judge {name!r} is a {spec.kind} judge; it compares answers (use it for win rates "
                             "or `judge audit`), it does not score them one by one")
        client, spec = await self._client_for(spec)
        rows = _rows(candidates)
        for r in rows:
            r["repeat"] = repeat
        results = await RubricJudge(spec, listwise=self.listwise).score_rows(client, self.cache, rows, progress)
        self.stopped_by_budget |= any(r[2] == NOT_JUDGED_BUDGET for r in results)
        return _scores_frame(candidates, spec.name, results)

    async def _combined(self, spec: JudgeSpec, candidates: pl.DataFrame, repeat: int, progress) -> pl.DataFrame:
        from prefwork.evaluators.rules import KNOWN_RULE_TASKS

        parts = []
        for name, weight in spec.components:
            sub = self.spec(name)
            lo, hi = sub.score_range if sub.kind != "rules" else (0, 1)
            parts.append((name, weight, lo, hi, await self.ascore(name, candidates, repeat=repeat)))
        tasks = candidates["task"].to_list() if "task" in candidates.columns else [None] * candidates.height
        metas = candidates["meta"].to_list() if "meta" in candidates.columns else [None] * candidates.height
        results = []
        for i in range(candidates.height):
            detail: dict[str, Any] = {"judges": {}}
            total = wsum = 0.0
            errors, capped = [], False
            for name, weight, lo, hi, frame in parts:
                s, err = frame["score"][i], frame["error"][i]
                applies = not (name == RULES_NAME and (tasks[i] not in KNOWN_RULE_TASKS or not metas[i]))
                if not applies:
                    detail["judges"][name] = {"applies": False}
                    continue
                norm = None if s is None else (s - lo) / (hi - lo)
                detail["judges"][name] = {"score": s, "normalised": norm, "weight": weight, "error": err}
                if err or norm is None:
                    errors.append(f"{name}: {err or 'no score'}")
                    continue
                total += weight * norm
                wsum += weight
                if name == RULES_NAME and spec.rule_cap is not None and s < 1.0:
                    capped = True
            if errors or wsum == 0:
                results.append((None, detail, "; ".join(errors) or "no component judge applies"))
                continue
            score = total / wsum
            if capped and score > spec.rule_cap:
                score, detail["rule_capped"] = float(spec.rule_cap), True
            results.append((score, detail, None))
        if progress:
            progress(candidates.height)
        return _scores_frame(candidates, spec.name, results)

    # -- pairwise -------------------------------------------------------------------------
    async def apairwise(self, name: str, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, *,
                        with_detail: bool = False, progress: Callable[[int], None] | None = None) -> pl.DataFrame:
        """Model vs baseline for every (prompt_id, repeat = candidate_id) on both sides -> JUDGMENTS."""
        spec = self.spec(name)
        if spec.kind != "pairwise":
            raise ValueError(f"judge {name!r} is not a pairwise judge (kind: {spec.kind})")
        client, spec = await self._client_for(spec)
        m = model_cands.select("prompt_id", "prompt", "candidate_id", pl.col("text").alias("model_text"),
                               pl.col("model"))
        b = baseline_cands.select("prompt_id", "candidate_id", pl.col("text").alias("baseline_text"),
                                  pl.col("model").alias("baseline"))
        both = m.join(b, on=["prompt_id", "candidate_id"], how="inner").rename({"candidate_id": "repeat"})
        both = both.sort(["repeat", "prompt_id"])
        results = await PairwiseJudge(spec, self.orders).judge_rows(client, self.cache, both.to_dicts(), progress)
        self.stopped_by_budget |= any(r[2] == NOT_JUDGED_BUDGET for r in results)
        out = both.select(
            "prompt_id", "repeat", "model", "baseline", pl.lit(spec.name).alias("judge"), "model_text", "baseline_text",
            pl.col("model_text").str.len_chars().cast(pl.Int64).alias("model_len"),
            pl.col("baseline_text").str.len_chars().cast(pl.Int64).alias("baseline_len"),
        ).with_columns(pl.Series("preference", [r[0] for r in results], dtype=pl.Float64),
                       pl.Series("error", [r[2] for r in results], dtype=pl.String))
        if with_detail:
            out = out.with_columns(pl.Series("detail", [json.dumps(r[1], ensure_ascii=False) for r in results],
                                             dtype=pl.String))
        return validate(out, JUDGMENTS)

    # -- sync wrappers, accounting, lifetime ------------------------------------------------
    def score(self, name: str, candidates: pl.DataFrame, **kw) -> pl.DataFrame:
        return self.run(self.ascore(name, candidates, **kw))

    def pairwise(self, name: str, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, **kw) -> pl.DataFrame:
        return self.run(self.apairwise(name, model_cands, baseline_cands, **kw))

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
