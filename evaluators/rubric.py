"""The LLM rubric judge: a grade per answer on the judge's range (e.g. ``math_1to5``: 1-5).

``RubricJudge.score_rows`` grades each (prompt, answer) in one call; listwise mode
(``listwise=True``, a judge with a ``listwise_template``) asks once per prompt for the best and the
worst of its N answers and scores them max / min of the range (the others the midpoint), which is
all best-vs-worst pairs need. A grade that cannot be parsed keeps the raw answer in ``detail`` and
an error; it is never dropped and never cached. Sessions and tables: ``evaluators.judges``.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Callable

from prefwork.evaluators.judge_cache import JudgeCache
from prefwork.evaluators.llm_client import JudgeClient
from prefwork.evaluators.llm_judge import JudgeSpec, Verdict, call_judge, json_schema_format, prompt_text, render
from prefwork.evaluators.parsers import parse_best_worst, parse_score


def score_request_extra(spec: JudgeSpec) -> dict:
    lo, hi = spec.score_range
    if spec.structured == "vllm":
        return {"extra_body": {"structured_outputs": {"choice": [str(i) for i in range(lo, hi + 1)]}}}
    if spec.structured == "openai":
        return {"response_format": json_schema_format("grade", {"score": {"type": "integer",
                                                                           "enum": list(range(lo, hi + 1))}})}
    return {}


@dataclass
class RubricJudge:
    """A pointwise grader (e.g. ``math_1to5``): one grade per (prompt, answer)."""

    spec: JudgeSpec
    listwise: bool = False
    name: str = field(init=False)

    def __post_init__(self):
        self.name = self.spec.name
        if self.listwise and not self.spec.listwise_template:
            raise ValueError(f"judge {self.name!r} has no listwise_template; listwise mode is unavailable")

    def normalise(self, score: float | None) -> float | None:
        lo, hi = self.spec.score_range
        return None if score is None else (score - lo) / (hi - lo)

    async def grade(self, client: JudgeClient, cache: JudgeCache, prompt: str, answer: str,
                    reference: str | None = None, repeat: int = 0) -> tuple[float | None, dict, str | None]:
        """(score, detail, error) for one answer."""
        lo, hi = self.spec.score_range
        ref = reference or ""
        user = render(self.spec.template, prompt=prompt_text(prompt), answer=answer or "",
                      reference=ref or "(none given)")
        v = await call_judge(self.spec, client, cache, kind="grade", user=user,
                             inputs={"prompt": prompt, "answer": answer, "reference": ref},
                             seed=self.spec.seed + repeat, extra=score_request_extra(self.spec),
                             parse=lambda t: parse_score(t, lo, hi))
        detail = {"raw": v.raw, "model": self.spec.model, "repeat": repeat}
        return (float(v.value) if v.value is not None else None), detail, v.error

    async def best_worst(self, client: JudgeClient, cache: JudgeCache, prompt: str, answers: list[str],
                         repeat: int = 0) -> Verdict:
        """Listwise: ``Verdict(value={"best": i, "worst": j})`` with 0-based indices into ``answers``."""
        n = len(answers)
        listing = "\n\n".join(f"[{i + 1}]\n{a}" for i, a in enumerate(answers))
        user = render(self.spec.listwise_template, prompt=prompt_text(prompt), answers=listing, n=str(n))
        props = {"best": {"type": "integer", "enum": list(range(1, n + 1))},
                 "worst": {"type": "integer", "enum": list(range(1, n + 1))}}
        # vLLM: a regex, not a JSON schema: the schema grammar lets a weak judge model spend its tokens
        # on whitespace before the object closes; the regex admits exactly {"best": i, "worst": j}, i != j
        alts = "|".join(f'{b}, "worst": (?:' + "|".join(str(w) for w in range(n, 0, -1) if w != b) + ")"
                        for b in range(n, 0, -1))
        extra = ({"extra_body": {"structured_outputs": {"regex": '\\{"best": (?:' + alts + ')\\}'}}}
                 if self.spec.structured == "vllm" else
                 {"response_format": json_schema_format("best_worst", props)} if self.spec.structured == "openai"
                 else {})
        spec = replace(self.spec, max_tokens=max(self.spec.max_tokens, 32))
        return await call_judge(spec, client, cache, kind="listwise", user=user,
                                inputs={"prompt": prompt, "answers": answers}, seed=self.spec.seed + repeat,
                                extra=extra, parse=lambda t: parse_best_worst(t, n))

    async def score_rows(self, client: JudgeClient, cache: JudgeCache, rows: list[dict],
                         progress: Callable[[int], None] | None = None) -> list[tuple]:
        """(score, detail, error) for each row (``prompt``, ``text``, optional ``reference``), in order."""
        if self.listwise:
            return await self._listwise_rows(client, cache, rows, progress)

        async def one(r):
            out = await self.grade(client, cache, r["prompt"], r["text"], r.get("reference"), r.get("repeat", 0))
            if progress:
                progress(1)
            return out
        return list(await asyncio.gather(*(one(r) for r in rows)))

    async def _listwise_rows(self, client, cache, rows, progress):
        lo, hi = self.spec.score_range
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(r["prompt_id"], []).append(i)
        out: list[tuple] = [None] * len(rows)  # type: ignore[list-item]

        async def one(idx: list[int]):
            if len(idx) == 1:  # nothing to rank: the midpoint, no call
                out[idx[0]] = (float((lo + hi) / 2), {"listwise": True, "single": True}, None)
                return
            v = await self.best_worst(client, cache, rows[idx[0]]["prompt"], [rows[i]["text"] or "" for i in idx])
            for pos, i in enumerate(idx):
                detail = {"listwise": True, "raw": v.raw, "model": self.spec.model, "position": pos + 1}
                if v.value is None:
                    out[i] = (None, detail, v.error)
                else:
                    s = hi if pos == v.value["best"] else lo if pos == v.value["worst"] else (lo + hi) / 2
                    out[i] = (float(s), {**detail, "best": v.value["best"] + 1, "worst": v.value["worst"] + 1}, None)
            if progress:
                progress(len(idx))
        await asyncio.gather(*(one(idx) for idx in groups.values()))
        return out
