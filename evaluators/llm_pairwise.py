"""The LLM pairwise judge for win rates: A vs B with position bias controlled.

``orders="both"`` (default) asks twice, model first and baseline first; the verdicts, read from the
model's side, must agree or the judgment is a tie (0.5). ``orders="random"`` asks once in an order
drawn from ``(seed, prompt_id, repeat)``, halving the cost. Identical outputs are a tie with no call.
A failed or unparsable call gives ``preference = null`` with ``error`` set (the win-rate code counts
those and leaves them out of the rate). Output: the JUDGMENTS contract (``pipeline.schemas``).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Callable

from prefwork.evaluators.judge_cache import JudgeCache
from prefwork.evaluators.judge_client import JudgeClient
from prefwork.evaluators.llm_judge import JudgeSpec, Verdict, _json_schema_format, call_judge, prompt_text, render

ORDERS = ("both", "random")


def parse_choice(text: str, choices: tuple[str, ...]) -> str | None:
    """The winner label in an answer: exactly a choice, ``{"winner": ...}``, ``[[A]]`` or ``winner: A``."""
    s = (text or "").strip()
    by_lower = {c.lower(): c for c in choices}
    try:
        obj = json.loads(s)
        if isinstance(obj, dict):
            obj = obj.get("winner", obj.get("choice"))
        return by_lower.get(str(obj).strip().lower()) if isinstance(obj, str) else None
    except json.JSONDecodeError:
        pass
    if s.strip(" .*\"'").lower() in by_lower:
        return by_lower[s.strip(" .*\"'").lower()]
    alts = "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True))
    for pat in (rf"\[\[\s*({alts})\s*\]\]", rf"(?:winner|verdict|better(?: answer)?|choice)\s*(?:is|:)?\s*\**\s*"
                                             rf"(?:answer\s+|assistant\s+)?\b({alts})\b"):
        found = re.findall(pat, s, flags=re.I)
        if found:
            return by_lower[found[-1].lower()]
    return None


def _order_seed(seed: int, prompt_id: str, repeat: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{prompt_id}|{repeat}".encode()).digest()[:8], "big")


@dataclass
class PairwiseJudge:
    """Compares two answers to one prompt; ``spec.choices`` = (label of A, label of B, label of a tie)."""

    spec: JudgeSpec
    orders: str | None = None

    def __post_init__(self):
        self.name = self.spec.name
        self.orders = self.orders or self.spec.orders
        if self.orders not in ORDERS:
            raise ValueError(f"pairwise orders must be one of {', '.join(ORDERS)}, got {self.orders!r}")
        if len(self.spec.choices) < 2:
            raise ValueError(f"judge {self.name!r}: choices needs labels for A and B (and optionally a tie)")

    def _extra(self) -> dict:
        if self.spec.structured == "vllm":
            return {"extra_body": {"structured_outputs": {"choice": list(self.spec.choices)}}}
        if self.spec.structured == "openai":
            return {"response_format": _json_schema_format("verdict", {"winner": {"type": "string",
                                                                                  "enum": list(self.spec.choices)}})}
        return {}

    async def compare(self, client: JudgeClient, cache: JudgeCache, prompt: str, a: str, b: str,
                      repeat: int = 0) -> Verdict:
        """One call with ``a`` shown first: ``Verdict(value=1.0 | 0.0 | 0.5)`` from A's side."""
        user = render(self.spec.template, prompt=prompt_text(prompt), answer_a=a, answer_b=b)
        labels = self.spec.choices
        score = {labels[0]: 1.0, labels[1]: 0.0, **({labels[2]: 0.5} if len(labels) > 2 else {})}

        def parse(text):
            c = parse_choice(text, labels)
            return None if c is None else score[c]
        return await call_judge(self.spec, client, cache, kind="pairwise", user=user,
                                inputs={"prompt": prompt, "a": a, "b": b}, seed=self.spec.seed + repeat,
                                extra=self._extra(), parse=parse)

    async def judge_pair(self, client: JudgeClient, cache: JudgeCache, prompt_id: str, prompt: str,
                         model_text: str, baseline_text: str, repeat: int = 0) -> tuple[float | None, dict, str | None]:
        """(preference from the model's side, detail, error) for one (prompt, repeat)."""
        if (model_text or "").strip() == (baseline_text or "").strip():
            return 0.5, {"identical": True}, None
        if self.orders == "both":
            first, second = await asyncio.gather(
                self.compare(client, cache, prompt, model_text, baseline_text, repeat),
                self.compare(client, cache, prompt, baseline_text, model_text, repeat))
            detail = {"model_first": first.value, "baseline_first": None if second.value is None else 1 - second.value,
                      "raw": [first.raw, second.raw]}
            err = first.error or second.error
            if err:
                return None, detail, err
            v1, v2 = first.value, 1.0 - second.value
            detail["position_consistent"] = v1 == v2
            return (v1 if v1 == v2 else 0.5), detail, None
        model_first = random.Random(_order_seed(self.spec.seed, prompt_id, repeat)).random() < 0.5
        a, b = (model_text, baseline_text) if model_first else (baseline_text, model_text)
        v = await self.compare(client, cache, prompt, a, b, repeat)
        detail = {"model_first": model_first, "raw": [v.raw]}
        if v.error:
            return None, detail, v.error
        return (v.value if model_first else 1.0 - v.value), detail, None

    async def judge_rows(self, client: JudgeClient, cache: JudgeCache, rows: list[dict],
                         progress: Callable[[int], None] | None = None) -> list[tuple]:
        """``judge_pair`` over rows with prompt_id, prompt, model_text, baseline_text, repeat (in order)."""
        async def one(r):
            out = await self.judge_pair(client, cache, r["prompt_id"], r["prompt"], r["model_text"],
                                        r["baseline_text"], r.get("repeat", 0))
            if progress:
                progress(1)
            return out
        return list(await asyncio.gather(*(one(r) for r in rows)))
