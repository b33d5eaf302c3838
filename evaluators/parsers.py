"""Reading a judge model's answer: a grade, a best/worst pick, or a pairwise winner.

Public because they are the contract between a judge's prompt template and the code: a new
template's answers can be checked against them directly (``parse_score("Score: 4", 1, 5) == 4``).
Each returns None when the answer cannot be read; the caller records the raw answer and an error,
and never caches it.
"""
from __future__ import annotations

import json
import re


def parse_score(text: str, lo: int, hi: int) -> int | None:
    """The grade in a judge's answer: a bare number, ``{"score": n}``, ``Score: n``, ``[[n]]`` or ``n/5``."""
    s = (text or "").strip()
    if not s:
        return None
    ok = lambda v: v if lo <= v <= hi else None  # noqa: E731
    try:
        obj = json.loads(s)
        if isinstance(obj, dict):
            obj = next((obj[k] for k in ("score", "grade", "rating") if k in obj), None)
        if isinstance(obj, (int, float, str)) and not isinstance(obj, bool) and str(obj).strip().isdigit():
            return ok(int(str(obj).strip()))
        return None
    except (json.JSONDecodeError, ValueError):
        pass
    num = r"(\d+)"
    for pat in (rf"\[\[\s*{num}\s*\]\]", rf"(?:score|grade|rating)\s*(?:is|of|=|:)?\s*\**\s*{num}\b",
                rf"^\s*{num}\s*(?:/\s*{hi})?\s*[.!]?\s*$", rf"\b{num}\s*/\s*{hi}\b"):
        found = re.findall(pat, s, flags=re.I | re.M)
        if found:
            return ok(int(found[-1]))
    return None


def parse_best_worst(text: str, n: int) -> dict | None:
    """``{"best": i, "worst": j}`` (0-based) from ``{"best": 2, "worst": 5}`` or ``best: 2 ... worst: 5``."""
    s = (text or "").strip()
    best = worst = None
    try:
        obj = json.loads(s)
        if isinstance(obj, dict):
            best, worst = obj.get("best"), obj.get("worst")
    except json.JSONDecodeError:
        mb = re.search(r"best\W{0,5}(\d+)", s, re.I)
        mw = re.search(r"worst\W{0,5}(\d+)", s, re.I)
        best, worst = (int(mb.group(1)) if mb else None), (int(mw.group(1)) if mw else None)
    if not isinstance(best, int) or not isinstance(worst, int) or isinstance(best, bool) or isinstance(worst, bool):
        return None
    if not (1 <= best <= n and 1 <= worst <= n) or (best == worst and n > 1):
        return None
    return {"best": best - 1, "worst": worst - 1}


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
