"""LLM step judge: an OpenAI-compatible model names the first wrong step of a worked solution.

What: the solution's steps are shown as ``Step 1: ...``, ``Step 2: ...`` (whatever their own
layout) inside ``data/judges/step_judge/template.md`` with the rubric ``rubric.md``; the model
answers one number: the first wrong step, or 0 when every step is correct. With vLLM the answer is
forced by structured outputs to one of ``"0"`` ... ``"N"`` (``extra_body.structured_outputs.choice``),
so it always parses; without (``structured=False``) the first integer of the reply is read.
``LLMStepJudge`` provides ``locate`` and ``accept`` (``pipeline.step_pairs.StepJudge``): a
continuation is accepted when the judge finds no wrong step in prefix + continuation.

Why: the deterministic checker (``evaluators.step_check``) only understands stated arithmetic;
a capable judge model covers reasoning errors in any worded solution. Calls go through the
project's ``evaluators.llm_client.JudgeClient`` (bounded concurrency, retries, usage); a request
that fails for good (e.g. the prompt is longer than the judge's context) becomes a ``failed``
verdict with the error, never a guessed step.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

from prefwork.pipeline.step_pairs import StepItem, StepVerdict
from prefwork.pipeline.steps import step_body
from prefwork.pipeline import DATA_DIR

NAME = "llm"
JUDGE_DIR = DATA_DIR / "judges" / "step_judge"


@dataclass
class StepJudgeConfig:
    """How the LLM step judge is asked."""

    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL of the judge, "
                                                                 "e.g. http://127.0.0.1:8000/v1"})
    model: str = field(default="", metadata={"help": "served judge model ('' = the server's first model)"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable with the API key"})
    temperature: float = field(default=0.0, metadata={"help": "judge sampling temperature"})
    max_tokens: int = field(default=4, metadata={"help": "tokens of the judge's answer (a step number)"})
    structured: bool = field(default=True, metadata={
        "help": "force the answer to '0'..'N' with vLLM structured outputs (off: parse the first integer)"})
    rubric: str = field(default="rubric.md", metadata={
        "help": "rubric file in the judge directory ('' for none: short contexts)"})
    template: str = field(default="template.md", metadata={"help": "prompt template file in the judge directory"})
    directory: str = field(default=str(JUDGE_DIR), metadata={"help": "directory holding the rubric and template"})
    concurrency: int = field(default=8, metadata={"help": "judge requests in flight at most"})


def render_prompt(template: str, rubric: str, problem: str, steps: list[str]) -> str:
    """The judge's user message: ``{{rubric}}``, ``{{problem}}``, ``{{steps}}``, ``{{num_steps}}`` filled in."""
    listing = "\n".join(f"Step {i}: {step_body(s)}" for i, s in enumerate(steps, start=1))
    values = {"rubric": rubric.strip(), "problem": problem.strip(), "steps": listing, "num_steps": str(len(steps))}
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template)
    return re.sub(r"\A\s+", "", text)  # an empty rubric leaves no leading blank lines


def parse_answer(text: str, num_steps: int) -> int | None:
    """The step number in a reply (0..num_steps), or None when there is none in range."""
    m = re.search(r"\d+", text or "")
    if not m:
        return None
    value = int(m.group())
    return value if 0 <= value <= num_steps else None


class LLMStepJudge:
    """Locate first wrong steps with a judge model behind an OpenAI-compatible API."""

    name = NAME

    def __init__(self, cfg: StepJudgeConfig | None = None, client=None):
        self.cfg = cfg or StepJudgeConfig()
        d = Path(self.cfg.directory)
        self.template = (d / self.cfg.template).read_text()
        self.rubric = (d / self.cfg.rubric).read_text() if self.cfg.rubric else ""
        self._client = client
        self.raw: list[str] = []  # the judge's replies of the last ``locate``, for audits and tests

    def _make_client(self):
        from prefwork.evaluators.llm_client import ClientOptions, JudgeClient

        opts = ClientOptions(base_url=self.cfg.base_url, api_key_env=self.cfg.api_key_env,
                             concurrency=self.cfg.concurrency, max_retries=2)
        return JudgeClient(opts)

    async def _one(self, client, model: str, item: StepItem) -> tuple[StepVerdict, str]:
        n = len(item.steps)
        if n == 0:
            return StepVerdict("failed", None, "no steps to judge"), ""
        user = render_prompt(self.template, self.rubric, item.problem, item.steps)
        extra = {"extra_body": {"structured_outputs": {"choice": [str(i) for i in range(n + 1)]}}} \
            if self.cfg.structured else None
        try:
            reply = await client.chat("step_judge", [{"role": "user", "content": user}], model=model,
                                      temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens, extra=extra)
        except Exception as exc:  # noqa: BLE001 - a failed request is a failed verdict, kept with its reason
            return StepVerdict("failed", None, f"judge request failed: {exc}"), ""
        value = parse_answer(reply.text, n)
        if value is None:
            return StepVerdict("failed", None, f"unparseable judge answer {reply.text!r}"), reply.text
        if value == 0:
            return StepVerdict("correct", None, "judge: no wrong step"), reply.text
        return StepVerdict("error", value - 1, f"judge: step {value} is the first wrong one"), reply.text

    async def _run(self, items: list[StepItem]) -> list[tuple[StepVerdict, str]]:
        client = self._client or self._make_client()
        try:
            model = self.cfg.model or await client.first_model()
            return await asyncio.gather(*(self._one(client, model, it) for it in items))
        finally:
            if self._client is None:
                await client.close()

    def locate(self, items: list[StepItem]) -> list[StepVerdict]:
        """One judge call per item; returns verdicts in order (``self.raw`` holds the replies)."""
        if not items:
            return []
        results = asyncio.run(self._run(items))
        self.raw = [raw for _, raw in results]
        return [v for v, _ in results]

    def accept(self, items: list[StepItem]) -> list[bool]:
        """A continuation (each item's last step) is accepted when the judge finds no wrong step."""
        return [v.status == "correct" for v in self.locate(items)]
