"""Rule judge: checks an answer against the constraints in its prompt's ``meta``.

Public API: ``RULES`` (name -> ``rule(text, meta) -> bool | None``, None = not applicable),
``TASK_RULES`` (which rules apply to a task; key ``"poem:zh"`` for Chinese classical verse),
``judge_text``, ``score_candidates`` (a candidates table -> a SCORES table, ``judge="rules"``)
and ``rule_pass_rates``. How a slogan, a title line, rows and rhyme are read is documented in
``evaluators.rules_en`` (English) and ``evaluators.rules_zh`` (Chinese).

Meta formats (JSON objects):

- slogan: ``{"subject": str, "keywords": [str, ...], "words": int, "required": [str],
  "forbidden": [str]}`` (required/forbidden may be empty or absent: those rules then do not apply)
- poem: ``{"subject": str, "keywords": [str], "title": str, "rows": int, "words_per_row": int,
  "rhyme": null | [[int, ...], ...] (1-based rows that must rhyme), "lang": "en"}``
- Chinese poem: ``{"title": str, "rows": int, "chars_per_row": int, "rhyme": [[2, 4]] | null,
  "lang": "zh"}``; rhyme absent means the even rows ([[2, 4]] for a quatrain).

``content`` = at least one keyword occurs (case-insensitive, whole words) and no word occurs
more than twice, so "a a a a" is not a 4-word slogan.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Callable

from prefwork.evaluators import rules_en as en
from prefwork.evaluators import rules_zh as zh

Rule = Callable[[str, dict], "bool | None"]
JUDGE_NAME = "rules"


def _by_lang(english: Rule | None, chinese: Rule | None) -> Rule:
    """One rule name for both languages: dispatch on ``meta["lang"]`` (default English)."""
    def rule(text: str, meta: dict) -> bool | None:
        impl = chinese if meta.get("lang") == "zh" else english
        return impl(text, meta) if impl is not None else None
    rule.__doc__ = f"English: {english.__doc__ if english else 'n/a'} Chinese: {chinese.__doc__ if chinese else 'n/a'}"
    return rule


def _content(text: str, meta: dict) -> bool | None:
    """Keyword mentioned and no word more than twice (slogan: whole text; poem: rows)."""
    if "title" in meta:
        return en.poem_content(text, meta) if meta.get("lang", "en") == "en" else None
    return en.slogan_content(text, meta)


RULES: dict[str, Rule] = {
    "word_count": en.slogan_word_count,
    "required_words": en.slogan_required,
    "forbidden_words": en.slogan_forbidden,
    "content": _content,
    "title": _by_lang(en.poem_title, zh.zh_title),
    "row_number": _by_lang(en.poem_row_number, zh.zh_row_number),
    "words_per_row": _by_lang(en.poem_words_per_row, None),
    "chars_per_row": _by_lang(None, zh.zh_chars_per_row),
    "rhyme": _by_lang(en.poem_rhyme, zh.zh_rhyme),
    "tone_pattern": _by_lang(None, zh.zh_tone_pattern),
}

TASK_RULES: dict[str, list[str]] = {
    "slogan": ["word_count", "required_words", "forbidden_words", "content"],
    "poem": ["title", "row_number", "words_per_row", "rhyme", "content"],
    "poem:zh": ["row_number", "chars_per_row", "rhyme", "tone_pattern", "title"],
}

#: Names shown in reports (the paper's table), in display order.
DISPLAY_NAMES: dict[str, str] = {
    "row_number": "Row Number", "words_per_row": "Words per Row", "chars_per_row": "Chars per Row",
    "rhyme": "Rhythm", "tone_pattern": "Tone Pattern", "title": "Title",
    "word_count": "Word Count", "required_words": "Required Words",
    "forbidden_words": "Forbidden Words", "content": "Content",
}

KNOWN_RULE_TASKS = ("slogan", "poem")


def rules_key(task: str, meta: dict) -> str:
    """Key into TASK_RULES for a task and its meta (Chinese poems have their own list)."""
    return "poem:zh" if task == "poem" and meta.get("lang") == "zh" else task


# --- meta checking -----------------------------------------------------------------------

def _need_int(meta: dict, key: str) -> None:
    v = meta.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"meta field '{key}' must be a positive integer, got {v!r}")


def _need_words(meta: dict, key: str, required: bool) -> None:
    v = meta.get(key)
    if v is None and not required:
        return
    if not isinstance(v, list) or not all(isinstance(w, str) and w.strip() for w in v) or (required and not v):
        raise ValueError(f"meta field '{key}' must be a {'non-empty ' if required else ''}list of words, got {v!r}")


def _need_rhyme(meta: dict) -> None:
    groups, rows = meta.get("rhyme"), meta["rows"]
    if groups is None:
        return
    ok = isinstance(groups, list) and all(
        isinstance(g, list) and len(g) >= 2
        and all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= rows for i in g)
        for g in groups)
    if not ok:
        raise ValueError(f"meta field 'rhyme' must be null or lists of >= 2 row numbers in 1..{rows}, got {groups!r}")


def check_meta(task: str, meta: dict) -> dict:
    """Validate a parsed meta for ``task``; return it (Chinese rhyme default filled in)."""
    if task not in KNOWN_RULE_TASKS:
        raise ValueError(f"unknown task {task!r} for the rule judge (known: {', '.join(KNOWN_RULE_TASKS)})")
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a JSON object, got {type(meta).__name__}")
    if task == "slogan":
        _need_int(meta, "words")
        _need_words(meta, "keywords", required=True)
        _need_words(meta, "required", required=False)
        _need_words(meta, "forbidden", required=False)
        return meta
    if not isinstance(meta.get("title"), str):
        raise ValueError(f"meta field 'title' must be a string, got {meta.get('title')!r}")
    _need_int(meta, "rows")
    lang = meta.get("lang", "en")
    if lang == "zh":
        _need_int(meta, "chars_per_row")
        if "rhyme" not in meta:
            meta = {**meta, "rhyme": zh.default_rhyme(meta["rows"])}
    elif lang == "en":
        _need_int(meta, "words_per_row")
        _need_words(meta, "keywords", required=True)
    else:
        raise ValueError(f"meta field 'lang' must be 'en' or 'zh', got {lang!r}")
    _need_rhyme(meta)
    return meta


@lru_cache(maxsize=4096)
def parse_meta(task: str, meta_json: str) -> dict:
    """Parse and check a meta JSON string once per distinct (task, meta)."""
    try:
        meta = json.loads(meta_json)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"meta is not valid JSON ({exc})") from None
    return check_meta(task, meta)


def judge_text(task: str, meta: dict | str, text: str) -> tuple[float, dict]:
    """Score one answer: (fraction of applicable rules passed, {rule: passed}).

    Raises ValueError for an unknown task (listing the known ones) or a malformed meta.
    """
    if task not in KNOWN_RULE_TASKS:
        raise ValueError(f"unknown task {task!r} for the rule judge (known: {', '.join(KNOWN_RULE_TASKS)})")
    meta = parse_meta(task, meta) if isinstance(meta, str) else check_meta(task, meta)
    text = text or ""
    detail = {}
    for name in TASK_RULES[rules_key(task, meta)]:
        result = RULES[name](text, meta)
        if result is not None:
            detail[name] = bool(result)
    if not detail:
        raise ValueError("no rule applies to this meta")
    return sum(detail.values()) / len(detail), detail


# --- tables ------------------------------------------------------------------------------

_NEEDED = ("prompt_id", "candidate_id", "text", "task", "meta")


def _judge_key(task: str, meta: str, text: str, detail_json: dict) -> tuple:
    """(score, detail JSON, error) for one distinct (task, meta, text); errors never raise."""
    if not task:
        return None, "{}", "task is missing"
    if not meta:
        return None, "{}", "meta is missing"
    try:
        score, detail = judge_text(task, meta, text)
    except ValueError as exc:
        return None, "{}", str(exc)
    key = tuple(detail.items())
    if key not in detail_json:
        detail_json[key] = json.dumps(detail)
    return score, detail_json[key], None


def score_candidates(candidates):
    """Score a candidates table (prompt_id, candidate_id, text, task, meta) -> SCORES table.

    Every input row gets one output row in the same order: ``judge="rules"``, ``score`` in
    0..1, ``detail`` the per-rule JSON; a malformed meta or unknown task gives a null score,
    ``detail="{}"`` and the reason in ``error``. Identical (task, meta, text) rows are judged
    once, and each distinct meta is parsed once.
    """
    import polars as pl
    from prefwork.pipeline.schemas import SCORES, SchemaError, validate

    missing = [c for c in _NEEDED if c not in candidates.columns]
    if missing:
        raise SchemaError(None, None, missing[0], f"missing column for the rule judge (needs: {', '.join(_NEEDED)})")
    keys = candidates.select(pl.col(c).cast(pl.String).fill_null("") for c in ("task", "meta", "text"))
    uniq = keys.unique()
    cache: dict = {}
    results = [_judge_key(t, m, x, cache) for t, m, x in uniq.iter_rows()]
    judged = uniq.with_columns(
        pl.Series("score", [r[0] for r in results], dtype=pl.Float64),
        pl.Series("detail", [r[1] for r in results], dtype=pl.String),
        pl.Series("error", [r[2] for r in results], dtype=pl.String),
    )
    joined = keys.join(judged, on=["task", "meta", "text"], how="left", maintain_order="left")
    out = pl.DataFrame({
        "prompt_id": candidates["prompt_id"].cast(pl.String),
        "candidate_id": candidates["candidate_id"].cast(pl.Int64),
        "judge": pl.repeat(JUDGE_NAME, candidates.height, dtype=pl.String, eager=True),
        "score": joined["score"], "detail": joined["detail"], "error": joined["error"],
    })
    return validate(out, SCORES)


def rule_pass_rates(scores):
    """Per-rule pass rates over a scores table: columns rule (display name), passed, total, rate.

    Only ``judge == "rules"`` rows with a detail count; a rule that did not apply to a row
    (absent from its detail) is not counted for it. Rules with the same name are pooled
    across tasks and languages (filter the scores first to separate them).
    """
    import polars as pl

    df = scores.filter(pl.col("judge") == JUDGE_NAME) if "judge" in scores.columns else scores
    struct = pl.Struct({name: pl.Boolean for name in RULES})
    wide = df.select(pl.col("detail").str.json_decode(struct).alias("d")).unnest("d")
    long = wide.unpivot(variable_name="key", value_name="ok").drop_nulls("ok")
    agg = long.group_by("key").agg(passed=pl.col("ok").sum().cast(pl.Int64), total=pl.len().cast(pl.Int64))
    order = {k: i for i, k in enumerate(DISPLAY_NAMES)}
    return (agg.with_columns(rate=pl.col("passed") / pl.col("total"),
                             pos=pl.col("key").replace_strict(order, return_dtype=pl.Int64),
                             rule=pl.col("key").replace_strict(DISPLAY_NAMES, return_dtype=pl.String))
            .sort("pos").select("rule", "passed", "total", "rate"))


__all__ = ["RULES", "TASK_RULES", "DISPLAY_NAMES", "judge_text", "score_candidates",
           "rule_pass_rates", "check_meta", "parse_meta", "rules_key"]
