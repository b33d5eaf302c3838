"""Split a worked solution into reasoning steps, and join steps back into a step-level prompt.

What: ``split_steps`` cuts a solution into steps in one of two layouts, chosen by ``StepConfig.mode``:

- ``numbered``: lines that start with ``Step k:`` (also ``Step k.`` / ``Step k -``, any case) open a
  step; lines that follow belong to it until the next label. Text before the first label is ignored.
- ``paragraphs``: blank-line separated paragraphs, one step each.
- ``auto`` (default): ``numbered`` when the text has at least one ``Step k:`` label, else ``paragraphs``.

Each step keeps its own text, label included (that is what the model writes and what a pair
trains on); ``step_body`` strips the label for checkers that read the numbers of a step.

Why: Step-DPO builds preferences over single steps: the prompt plus the correct steps so far
(``step_prompt``), then one correct and one wrong next step. Sampling continuations and training
both use the same ``step_prompt`` text, so the continuations are on-policy for exactly the
prefix the pair trains on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

#: A step label at the start of a line: "Step 3:", "step 3.", "Step 3 -", "**Step 3:**".
STEP_LABEL = re.compile(r"^\s*(?:\*\*)?step\s+(\d+)\s*(?:\*\*)?\s*[:.)\-]\s*(?:\*\*)?\s*", re.IGNORECASE)
MODES = ("auto", "numbered", "paragraphs")


@dataclass
class StepConfig:
    """How solutions are cut into steps."""

    mode: str = field(default="auto", metadata={
        "help": "numbered ('Step k:' lines open a step), paragraphs (blank-line separated), or auto "
                "(numbered when a 'Step k:' label is present, else paragraphs)"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown step mode {self.mode!r}; valid: {', '.join(MODES)}")


def detect_mode(text: str) -> str:
    """``numbered`` if any line carries a ``Step k:`` label, else ``paragraphs``."""
    return "numbered" if any(STEP_LABEL.match(line) for line in text.splitlines()) else "paragraphs"


def split_steps(text: str, cfg: StepConfig | None = None) -> list[str]:
    """The steps of ``text`` (stripped, empty ones dropped), in order.

    In ``numbered`` mode a solution without any label yields no steps (the caller counts it
    as unsplittable rather than guessing); use ``auto`` to fall back to paragraphs.
    """
    mode = (cfg or StepConfig()).mode
    if mode == "auto":
        mode = detect_mode(text)
    if mode == "paragraphs":
        return [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    steps: list[list[str]] = []
    for line in text.splitlines():
        if STEP_LABEL.match(line):
            steps.append([line.strip()])
        elif steps and line.strip():
            steps[-1].append(line.strip())
    return ["\n".join(s) for s in steps]


def step_body(step: str) -> str:
    """The step without its ``Step k:`` label (the text a checker reads)."""
    return STEP_LABEL.sub("", step, count=1).strip()


def separator(steps_mode: str) -> str:
    """What joins steps: a newline for numbered steps, a blank line for paragraphs."""
    return "\n\n" if steps_mode == "paragraphs" else "\n"


def join_steps(steps: list[str], mode: str) -> str:
    """Steps back into one solution text in the given layout (``numbered`` or ``paragraphs``)."""
    return separator(mode).join(steps)


def step_prompt(problem: str, steps_before: list[str], mode: str) -> str:
    """The step-level prompt: the problem, a blank line, then the correct steps so far.

    With no steps before (the first step is wrong) it is the problem alone, so a step pair at
    index 0 trains on the same prompt as a whole-solution pair would.
    """
    if not steps_before:
        return problem.strip()
    return problem.strip() + "\n\n" + join_steps(steps_before, mode)


def next_label(index: int, mode: str) -> str:
    """The label a step at 0-based ``index`` opens with: ``Step {index + 1}: `` (numbered) or ''."""
    return f"Step {index + 1}: " if mode == "numbered" else ""


def first_step_of(continuation: str, mode: str, index: int) -> str:
    """The first step of a sampled continuation, labelled like the step it replaces.

    The sampler stops at the step separator, but a model may still write more; only the first
    step counts. A numbered continuation that forgot its label gets ``Step {index + 1}: ``.
    """
    text = continuation.strip()
    if mode == "paragraphs":
        return re.split(r"\n\s*\n", text, maxsplit=1)[0].strip() if text else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0].strip()
    return first if STEP_LABEL.match(first) else next_label(index, mode) + first
