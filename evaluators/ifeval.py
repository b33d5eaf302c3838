"""IFEval judge: verifiable-instruction checks with IFEval's own checkers.

IFEval (Zhou et al., 2023, "Instruction-Following Evaluation for Large Language Models") scores
an answer by running one deterministic checker per instruction in its prompt ("answer in all
lowercase", "include the keywords [...]", "wrap your answer in JSON", ...). Tulu 3 built its
instruction-following preference data the same way: prompts with verifiable constraints appended,
answers ranked by these checkers. We do not re-implement the checkers: ``if-verifiable``
(Apache-2.0) ships Google's IFEval code (``if_verifiable.ifeval``), so a score here means what it
means in the IFEval paper and in Tulu 3.

Public API: ``SUPPORTED_IDS`` / ``UNSUPPORTED_IDS`` (which IFEval instruction ids this judge
runs, and why the others are left out; kept in ``evaluators.ifeval_ids``), ``check_response``, ``judge_text``, ``score_candidates``
(a candidates table -> a SCORES table, ``judge="ifeval"``; the same shape as
``evaluators.rules.score_candidates``) and ``ifeval_accuracy`` (IFEval's prompt- and
instruction-level accuracies).

Meta format (the prompt's ``meta`` JSON): ``{"instructions": [{"id": "<ifeval instruction id>",
"kwargs": {...}}, ...]}``, the kwargs being those of the instruction class's
``build_description`` (IFEval's own dataset uses the same names), e.g.
``{"id": "keywords:existence", "kwargs": {"keywords": ["river"]}}``. Other meta keys are ignored.

Strict and loose, as in IFEval: *strict* checks the response as is; *loose* also accepts it when
a variant passes (first and/or last line removed, markdown ``*`` removed), which forgives a
"Sure, here is..." line. The score is the strict fraction; the detail records both.
"""
from __future__ import annotations

import json
from functools import lru_cache

from prefwork.evaluators.ifeval_ids import SUPPORTED_IDS, UNSUPPORTED_IDS  # noqa: F401 - public here

JUDGE_NAME = "ifeval"


@lru_cache(maxsize=1)
def _registry() -> dict:
    """IFEval's id -> checker class table, loaded on first use.

    Also seeds ``langdetect`` (``DetectorFactory.seed = 0``): its detector is randomised, so
    without a seed the three language checks (response_language, english_capital,
    english_lowercase) could judge the same text differently from run to run.
    """
    import langdetect
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    langdetect.DetectorFactory.seed = 0
    return {iid: INSTRUCTION_DICT[iid] for iid in SUPPORTED_IDS}


def _unsupported(iid: object) -> str:
    why = UNSUPPORTED_IDS.get(iid) if isinstance(iid, str) else None
    if why:
        return f"instruction id {iid!r} is not supported: {why}"
    return f"unknown instruction id {iid!r} (supported: {', '.join(SUPPORTED_IDS)})"


def _build_checker(iid: str, kwargs: dict):
    """A checker for one instruction, built with exactly the given kwargs.

    IFEval's ``build_description`` draws a *random* value for any argument it is not given
    (or given out of range), which would make the judge nondeterministic and check a
    constraint the prompt never stated. So every argument the class declares is required,
    integers must be >= 0, and the two range-checked ones (letter, nth_paragraph) are checked
    here. Raises ValueError naming the instruction id.
    """
    if iid not in SUPPORTED_IDS:
        raise ValueError(_unsupported(iid))
    if not isinstance(kwargs, dict):
        raise ValueError(f"instruction {iid!r}: kwargs must be a JSON object, got {kwargs!r}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    checker = _registry()[iid](iid)
    try:
        checker.build_description(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"instruction {iid!r}: bad kwargs {kwargs!r} ({exc})") from None
    missing = [k for k in checker.get_instruction_args_keys() if k not in kwargs]
    if missing:
        raise ValueError(f"instruction {iid!r}: kwargs lack {', '.join(missing)} (IFEval would draw them at random)")
    for k, v in kwargs.items():  # values IFEval would silently replace by a random draw
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise ValueError(f"instruction {iid!r}: kwarg {k!r} must be >= 0, got {v}")
        if isinstance(v, str) and not v.strip():
            raise ValueError(f"instruction {iid!r}: kwarg {k!r} must be a non-empty string")
        if isinstance(v, list) and not (v and all(isinstance(w, str) and w.strip() for w in v)):
            raise ValueError(f"instruction {iid!r}: kwarg {k!r} must be a non-empty list of words, got {v!r}")
    letter = kwargs.get("letter")
    if iid == "keywords:letter_frequency" and not (isinstance(letter, str) and len(letter) == 1
                                                     and letter.isascii() and letter.isalpha()):
        raise ValueError(f"instruction {iid!r}: kwarg 'letter' must be one ASCII letter, got {letter!r}")
    if iid == "length_constraints:nth_paragraph_first_word" and not (
            1 <= kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]):
        raise ValueError(f"instruction {iid!r}: nth_paragraph must be in 1..num_paragraphs, got {kwargs!r}")
    return checker


def _check(checker, iid: str, text: str) -> bool:
    """Run one checker; an empty answer follows nothing (as in IFEval)."""
    if not text.strip():
        return False
    try:
        return bool(checker.check_following(text))
    except Exception as exc:  # a checker crash (e.g. a keyword that is not a valid regex)
        raise ValueError(f"instruction {iid!r}: checker failed ({type(exc).__name__}: {exc})") from None


def check_response(text: str, instructions: list[dict], *, loose: bool = True) -> list[dict]:
    """Check one answer against IFEval instructions: one ``{"id", "followed"[, "loose"]}`` each.

    ``followed`` is IFEval's strict check (the answer as is); ``loose`` (when asked) is IFEval's
    loose check (any of the answer, first/last line removed, ``*`` removed passes). Raises
    ValueError for an unsupported id, missing or bad kwargs, or a malformed instruction.
    """
    if not isinstance(instructions, list):
        raise ValueError(f"instructions must be a list, got {type(instructions).__name__}")
    text = text or ""
    variants = None
    results = []
    for inst in instructions:
        if not isinstance(inst, dict) or "id" not in inst:
            raise ValueError(f"each instruction must be an object with an 'id', got {inst!r}")
        iid = inst["id"]
        checker = _build_checker(iid, inst.get("kwargs") or {})
        res = {"id": iid, "followed": _check(checker, iid, text)}
        if loose:
            if variants is None:
                from if_verifiable.common import get_loose_transformations
                variants = get_loose_transformations(text)
            res["loose"] = any(_check(checker, iid, v) for v in variants)
        results.append(res)
    return results


@lru_cache(maxsize=4096)
def parse_meta(meta_json: str) -> tuple[dict, ...]:
    """The instruction list of a meta JSON string, checked once per distinct meta.

    Raises ValueError when the meta is not JSON, has no non-empty ``instructions`` list, or
    names an unsupported id or bad kwargs (building each checker once checks all of that).
    """
    try:
        meta = json.loads(meta_json)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"meta is not valid JSON ({exc})") from None
    insts = meta.get("instructions") if isinstance(meta, dict) else None
    if not isinstance(insts, list) or not insts:
        raise ValueError('meta has no "instructions" list (the ifeval judge needs '
                         '{"instructions": [{"id": ..., "kwargs": {...}}]})')
    for inst in insts:
        if not isinstance(inst, dict) or "id" not in inst:
            raise ValueError(f"each instruction must be an object with an 'id', got {inst!r}")
        _build_checker(inst["id"], inst.get("kwargs") or {})
    return tuple(insts)


def judge_text(meta: dict | str, text: str) -> tuple[float, dict]:
    """Score one answer: (fraction of instructions followed, strict; detail).

    ``detail = {"instructions": [{"id", "followed", "loose"}, ...], "all_followed": bool,
    "all_followed_loose": bool}``. Raises ValueError for a meta without instructions or with
    an unsupported instruction.
    """
    insts = list(parse_meta(meta if isinstance(meta, str) else json.dumps(meta, sort_keys=True)))
    results = check_response(text, insts)
    followed = sum(r["followed"] for r in results)
    detail = {"instructions": results, "all_followed": followed == len(results),
              "all_followed_loose": all(r["loose"] for r in results)}
    return followed / len(results), detail


# --- tables ------------------------------------------------------------------------------

_NEEDED = ("prompt_id", "candidate_id", "text", "meta")


def _judge_key(meta: str, text: str) -> tuple:
    """(score, detail JSON, error) for one distinct (meta, text); errors never raise."""
    if not meta:
        return None, "{}", 'meta is missing (the ifeval judge needs {"instructions": [...]})'
    try:
        score, detail = judge_text(meta, text)
    except ValueError as exc:
        return None, "{}", str(exc)
    return score, json.dumps(detail), None


def score_candidates(candidates):
    """Score a candidates table (prompt_id, candidate_id, text, meta) -> SCORES table.

    Every input row gets one output row in the same order: ``judge="ifeval"``, ``score`` in
    0..1 (fraction of instructions followed, strict), ``detail`` the per-instruction JSON of
    ``judge_text``. A row whose meta is missing, has no instructions or names an unsupported
    instruction gets a null score, ``detail="{}"`` and an ``error`` that starts with its
    prompt_id. The ``task`` column is not needed: the instructions in ``meta`` decide. Identical
    (meta, text) rows are judged once, and each distinct meta is parsed once.
    """
    import polars as pl

    from prefwork.pipeline.schemas import SCORES, SchemaError, validate

    missing = [c for c in _NEEDED if c not in candidates.columns]
    if missing:
        raise SchemaError(None, None, missing[0], f"missing column for the ifeval judge (needs: {', '.join(_NEEDED)})")
    keys = candidates.select(pl.col(c).cast(pl.String).fill_null("") for c in ("meta", "text"))
    uniq = keys.unique()
    results = [_judge_key(m, x) for m, x in uniq.iter_rows()]
    judged = uniq.with_columns(
        pl.Series("score", [r[0] for r in results], dtype=pl.Float64),
        pl.Series("detail", [r[1] for r in results], dtype=pl.String),
        pl.Series("error", [r[2] for r in results], dtype=pl.String),
    )
    joined = keys.join(judged, on=["meta", "text"], how="left", maintain_order="left")
    pid = candidates["prompt_id"].cast(pl.String)
    error = (pl.when(joined["error"].is_not_null())
             .then(pl.format("prompt {}: {}", pl.lit(pid), pl.lit(joined["error"]))))
    out = pl.DataFrame({
        "prompt_id": pid,
        "candidate_id": candidates["candidate_id"].cast(pl.Int64),
        "judge": pl.repeat(JUDGE_NAME, candidates.height, dtype=pl.String, eager=True),
        "score": joined["score"], "detail": joined["detail"],
    }).with_columns(error.cast(pl.String).alias("error"))
    return validate(out, SCORES)


def ifeval_accuracy(scores) -> dict:
    """IFEval's metrics over a scores table (``judge == "ifeval"`` rows; errored rows are counted apart).

    - ``prompt_level_strict``: share of responses that follow *all* their instructions;
    - ``instruction_level_strict``: share of all instructions (pooled over responses) followed;
    - the same two for IFEval's loose check; ``responses``, ``instructions``, ``errors`` counts;
    - ``per_instruction``: ``{id: {"followed", "total", "accuracy"}}`` (strict), ids sorted.

    A response is one scores row (one candidate), as IFEval counts one answer per prompt.
    Accuracies are None when nothing was judged.
    """
    import polars as pl

    df = scores.filter(pl.col("judge") == JUDGE_NAME) if "judge" in scores.columns else scores
    ok = df.filter(pl.col("error").is_null()) if "error" in df.columns else df
    n_resp = n_inst = all_s = all_l = inst_s = inst_l = 0
    per: dict[str, list[int]] = {}
    for raw in ok["detail"]:
        detail = json.loads(raw)
        n_resp += 1
        all_s += bool(detail["all_followed"])
        all_l += bool(detail["all_followed_loose"])
        for r in detail["instructions"]:
            n_inst += 1
            inst_s += bool(r["followed"])
            inst_l += bool(r["loose"])
            cell = per.setdefault(r["id"], [0, 0])
            cell[0] += bool(r["followed"])
            cell[1] += 1

    def share(a: int, b: int):
        return a / b if b else None

    return {
        "prompt_level_strict": share(all_s, n_resp), "instruction_level_strict": share(inst_s, n_inst),
        "prompt_level_loose": share(all_l, n_resp), "instruction_level_loose": share(inst_l, n_inst),
        "responses": n_resp, "instructions": n_inst, "errors": df.height - ok.height,
        "per_instruction": {iid: {"followed": f, "total": t, "accuracy": f / t}
                            for iid, (f, t) in sorted(per.items())},
    }


__all__ = ["JUDGE_NAME", "SUPPORTED_IDS", "UNSUPPORTED_IDS", "check_response", "judge_text",
           "parse_meta", "score_candidates", "ifeval_accuracy"]
