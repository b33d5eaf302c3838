"""Deterministic step checker for arithmetic word problems: which step is the first wrong one?

What: every step of a solution states its computations as equations ("4 * 12 = 48 muffins",
"2 * (14 + 9) = 46"; ``x``/``×``/``÷``, ``$`` and thousands commas are understood). A step is
wrong when

- **arithmetic**: an equation does not hold (a stated result with d decimals may be rounded to d
  decimals; an integer result must be exact);
- **ungrounded**: an operand is a number that appears neither in the problem (digits, or number
  words such as "three", "twice", "dozen", "quarter", "percent", "hour", "weekday") nor in an
  earlier step, nor earlier in the same step (1 and 2 are always allowed) - a misread quantity;
- **off the reference path** (only with ``reference_path=True``): an equation's result is none of
  the values the reference solution computes. This catches logic slips with correct arithmetic
  ("28 + 21 = 49" where "28 - 21" was meant) but also rejects valid alternative routes, so it is
  off by default when locating errors and on when accepting sampled continuations (a chosen step
  must be provably correct, a false negative only costs a pair).

A solution with no wrong step but a final answer (the last number of the last step) that differs
from ``meta.answer`` is ``unlocated``: wrong, but the checker cannot say where.

Why: the LLM step judge needs a model that can judge; this checker lets the tiny local policy
yield real step-level pairs, and it is the ground truth the tests hold the pipeline to.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field

from prefwork.pipeline.steps import step_body

NAME = "check"
NUMBER = re.compile(r"\d+(?:\.\d+)?")
_EXPR = r"[\d(][\d.()+\-*/ ]*"
EQUATION = re.compile(rf"{_EXPR}(?:=\s*{_EXPR})+")
#: Words that stand for a number in a problem (a misread check must not flag "3" in "three").
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "hundred": 100, "thousand": 1000,
    "twice": 2, "double": 2, "half": 2, "triple": 3, "third": 3, "quarter": 4, "dozen": 12,
    "percent": 100, "hour": 60, "minute": 60, "day": 24, "week": 7, "weekday": 5, "month": 12,
    "year": 12, "seventh": 7, "fifth": 5, "fourth": 4, "sixth": 6, "tenth": 10,
}
ALWAYS_GROUNDED = (1.0, 2.0)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass
class CheckConfig:
    """Which checks the deterministic step checker applies."""

    grounding: bool = field(default=True, metadata={
        "help": "flag operands found neither in the problem nor in earlier steps (misread numbers)"})
    reference_path: bool = field(default=False, metadata={
        "help": "flag results that the reference solution never computes (catches logic slips; "
                "rejects valid alternative routes)"})


@dataclass
class StepResult:
    """One step's check: ``ok``; ``equations`` verified; ``reason`` of the first problem found."""

    ok: bool
    equations: int
    reason: str = ""
    values: list[float] = field(default_factory=list)


def normalise(text: str) -> str:
    """Unify operators and strip currency and thousands separators so equations parse."""
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-").replace("$", "")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return re.sub(r"(?<=\d)\s*[xX]\s*(?=[\d(])", " * ", text)


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    raise ValueError("not arithmetic")


def evaluate(expr: str) -> float | None:
    """The value of an arithmetic expression (numbers, + - * /, parentheses), or None."""
    expr = expr.strip().rstrip(".").strip()
    if not expr:
        return None
    try:
        return _eval(ast.parse(expr, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _decimals(literal: str) -> int:
    literal = literal.strip().rstrip(".")
    return len(literal.split(".")[1]) if "." in literal else 0


def agrees(value: float, stated: str) -> bool:
    """Does ``value`` equal the stated literal, allowing rounding to the literal's decimals?"""
    target = evaluate(stated)
    if target is None:
        return False
    d = _decimals(stated)
    tol = 0.5 * 10 ** -d + 1e-9 if d else 1e-9 * max(1.0, abs(target))
    return abs(value - target) <= tol


def _close_to_any(x: float, pool) -> bool:
    return any(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for y in pool)


def problem_numbers(problem: str) -> set[float]:
    """Numbers a problem states, in digits or as number words (plurals included)."""
    text = normalise(problem)
    found = {float(n) for n in NUMBER.findall(text)}
    for word in re.findall(r"[a-z]+", text.lower()):
        for w in (word, word[:-1] if word.endswith("s") else word):
            if w in NUMBER_WORDS:
                found.add(float(NUMBER_WORDS[w]))
    return found


def reference_values(reference_steps: list[str]) -> set[float]:
    """Every value the reference solution's equations compute (its path through the problem)."""
    values: set[float] = set()
    for step in reference_steps:
        for eq in EQUATION.findall(normalise(step_body(step))):
            values.update(v for v in (evaluate(p) for p in eq.split("=")) if v is not None)
    return values


def check_step(step: str, known: set[float], cfg: CheckConfig, ref_values: set[float] | None = None) -> StepResult:
    """Check one step against the numbers ``known`` so far (problem + earlier steps).

    ``known`` is not modified; the caller adds the step's numbers after it passes.
    """
    body = normalise(step_body(step))
    seen = set(known) | set(ALWAYS_GROUNDED)
    count, values = 0, []
    for eq in EQUATION.findall(body):
        parts = [p.strip().rstrip(".").strip() for p in eq.split("=")]
        parsed = [evaluate(p) for p in parts]
        if any(v is None for v in parsed) or len(parts) < 2:
            continue  # not a computation (e.g. a date or a ratio in words): nothing to verify
        count += 1
        if cfg.grounding:
            for part in parts[:-1]:
                for lit in NUMBER.findall(part):
                    if not _close_to_any(float(lit), seen):
                        return StepResult(False, count, f"ungrounded number {lit} in '{eq.strip()}'", values)
        for part, value in zip(parts[1:], parsed[1:]):
            if not agrees(parsed[0], part):
                return StepResult(False, count, f"arithmetic: '{eq.strip()}' (the left side is {parsed[0]:g})", values)
            seen.add(value)
        result = parsed[-1]
        if ref_values is not None and not _close_to_any(result, ref_values):
            return StepResult(False, count, f"off the reference path: {parts[-1]} is not a value the "
                                            "reference solution computes", values)
        values.extend(parsed)
        seen.update(float(n) for p in parts for n in NUMBER.findall(p))
    return StepResult(True, count, "", values)


def final_answer(steps: list[str]) -> float | None:
    """The last number of the last step (where a worked solution states its result)."""
    if not steps:
        return None
    nums = NUMBER.findall(normalise(step_body(steps[-1])))
    return float(nums[-1]) if nums else None


@dataclass
class SolutionCheck:
    """A whole solution's check: ``status`` correct | error | unlocated | unsplittable."""

    status: str
    first_error: int | None
    reason: str
    steps: list[StepResult]
    answer: float | None


def check_solution(problem: str, steps: list[str], cfg: CheckConfig | None = None, *,
                   answer: float | None = None, reference_steps: list[str] | None = None) -> SolutionCheck:
    """Locate the first wrong step of ``steps`` (0-based), or report the solution correct.

    ``answer`` (the problem's known answer) turns a solution whose steps all pass but whose final
    number is wrong into ``unlocated``. ``reference_steps`` are needed for ``cfg.reference_path``.
    """
    cfg = cfg or CheckConfig()
    if not steps:
        return SolutionCheck("unsplittable", None, "no steps", [], None)
    ref = reference_values(reference_steps) if cfg.reference_path and reference_steps else None
    if ref is not None and answer is not None:
        ref.add(float(answer))
    known = problem_numbers(problem)
    results = []
    for i, step in enumerate(steps):
        res = check_step(step, known, cfg, ref)
        results.append(res)
        if not res.ok:
            return SolutionCheck("error", i, res.reason, results, final_answer(steps))
        known |= {float(n) for n in NUMBER.findall(normalise(step_body(step)))}
    got = final_answer(steps)
    if answer is not None and (got is None or not agrees(float(answer), f"{got:g}")):
        return SolutionCheck("unlocated", None, f"final answer {got} is not {answer:g}, but every step checks",
                             results, got)
    return SolutionCheck("correct", None, "", results, got)


def check_continuation(problem: str, steps_before: list[str], step: str, cfg: CheckConfig | None = None, *,
                       reference_steps: list[str] | None = None, answer: float | None = None) -> StepResult:
    """Is ``step`` a verifiably correct next step after ``steps_before``?

    It must state at least one computation, and every computation must check (with the
    configured grounding and reference-path checks; numbers of the steps before count as known).
    The default config checks the reference path: an accepted step must be provably on track.
    """
    cfg = cfg or CheckConfig(reference_path=True)
    known = problem_numbers(problem)
    for s in steps_before:
        known |= {float(n) for n in NUMBER.findall(normalise(step_body(s)))}
    ref = None
    if cfg.reference_path and reference_steps:
        ref = reference_values(reference_steps) | ({float(answer)} if answer is not None else set())
    res = check_step(step, known, cfg, ref)
    if res.ok and res.equations == 0:
        return StepResult(False, 0, "states no computation to verify", [])
    return res


class CheckStepJudge:
    """The checker as a step judge for ``pipeline.step_pairs`` (``locate`` and ``accept``).

    ``locate`` uses ``locate_cfg`` (provable errors only, by default); ``accept`` uses
    ``accept_cfg`` (reference path on, by default: a chosen step must reproduce a value of the
    reference solution when the problem has one).
    """

    name = NAME

    def __init__(self, locate_cfg: CheckConfig | None = None, accept_cfg: CheckConfig | None = None):
        self.locate_cfg = locate_cfg or CheckConfig()
        self.accept_cfg = accept_cfg or CheckConfig(reference_path=True)

    def locate(self, items):
        from prefwork.pipeline.step_pairs import StepVerdict

        out = []
        for it in items:
            res = check_solution(it.problem, it.steps, self.locate_cfg, answer=it.answer,
                                 reference_steps=it.reference_steps)
            status = "failed" if res.status == "unsplittable" else res.status
            out.append(StepVerdict(status, res.first_error, res.reason))
        return out

    def accept(self, items) -> list[bool]:
        return [check_continuation(it.problem, it.steps[:-1], it.steps[-1], self.accept_cfg,
                                   reference_steps=it.reference_steps, answer=it.answer).ok for it in items]
