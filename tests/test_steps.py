"""Steps of the hand-written math solutions (data/math): splitting, and first-error location by the
deterministic checker (exactly the hand labels) and by the LLM judge on the real vLLM server
(a random tiny model judges, so only the contract and the structured-output guarantee are asserted).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefwork.evaluators.step_check import CheckConfig, agrees, check_continuation, check_solution, evaluate
from prefwork.pipeline.step_pairs import StepItem
from prefwork.pipeline.steps import StepConfig, detect_mode, first_step_of, split_steps, step_body, step_prompt

DATA = Path(__file__).resolve().parent.parent / "data" / "math"
PROBLEMS = {r["prompt_id"]: r for r in map(json.loads, (DATA / "problems.jsonl").read_text().splitlines())}
SOLUTIONS = [json.loads(x) for x in (DATA / "solutions.jsonl").read_text().splitlines()]


def item(sol: dict) -> tuple[dict, list[str], list[str]]:
    prob = PROBLEMS[sol["prompt_id"]]
    return prob, split_steps(sol["text"]), split_steps(prob["reference"])


def test_the_data_has_30_problems_with_references_and_correct_and_wrong_solutions():
    assert len(PROBLEMS) >= 30
    kinds = {}
    for sol in SOLUTIONS:
        kinds.setdefault(sol["prompt_id"], set()).add(sol["kind"])
    for pid, prob in PROBLEMS.items():
        assert prob["task"] == "math" and "answer" in prob["meta"]
        assert len(split_steps(prob["reference"])) >= 2
        assert "correct" in kinds[pid] and kinds[pid] - {"correct"}, pid
    assert {k for ks in kinds.values() for k in ks} == {"correct", "arithmetic", "misread", "logic"}


@pytest.mark.parametrize("sol", SOLUTIONS, ids=lambda s: f"{s['prompt_id']}-{s['solution_id']}")
def test_split_numbered_and_paragraph_solutions(sol):
    prob, steps, ref = item(sol)
    assert len(steps) == len(ref)  # every hand-written solution follows the reference's steps
    if "Step 1:" in sol["text"]:
        assert detect_mode(sol["text"]) == "numbered"
        assert all(s.startswith(f"Step {i}: ") for i, s in enumerate(steps, 1))
        assert split_steps(sol["text"], StepConfig("paragraphs")) == [sol["text"]]  # no blank lines
    else:
        assert detect_mode(sol["text"]) == "paragraphs"
        assert split_steps(sol["text"], StepConfig("numbered")) == []  # no labels: nothing to split
    assert all(step_body(s) and not step_body(s).startswith("Step") for s in steps)


def test_splitter_details():
    text = "Let us see.\nStep 1: 2 * 3 = 6 apples\n  so six.\n\nstep 2. 6 + 1 = 7\n**Step 3:** done 7"
    assert split_steps(text) == ["Step 1: 2 * 3 = 6 apples\nso six.", "step 2. 6 + 1 = 7", "**Step 3:** done 7"]
    assert step_body("**Step 3:** done 7") == "done 7"
    assert split_steps("a\n\n\n  b \n\nc") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="valid: auto, numbered, paragraphs"):
        StepConfig("lines")
    assert step_prompt("Q?", [], "numbered") == "Q?"
    assert step_prompt("Q?", ["Step 1: a"], "numbered") == "Q?\n\nStep 1: a"
    assert first_step_of("It is 2 * 3 = 6.\nStep 3: more", "numbered", 1) == "Step 2: It is 2 * 3 = 6."
    assert first_step_of("Step 2: x\nStep 3: y", "numbered", 1) == "Step 2: x"
    assert first_step_of("one para\n\ntwo", "paragraphs", 0) == "one para"


@pytest.mark.parametrize("sol", SOLUTIONS, ids=lambda s: f"{s['prompt_id']}-{s['solution_id']}")
def test_checker_finds_exactly_the_hand_labelled_first_error(sol):
    prob, steps, ref = item(sol)
    answer = prob["meta"]["answer"]
    strict = check_solution(prob["prompt"], steps, CheckConfig(reference_path=True), answer=answer,
                            reference_steps=ref)
    assert strict.first_error == sol["first_error"], strict.reason
    plain = check_solution(prob["prompt"], steps, answer=answer)
    if sol["kind"] == "logic":  # right arithmetic, wrong operation: wrong answer, step not provable
        assert (plain.status, plain.first_error) == ("unlocated", None)
    else:
        assert plain.first_error == sol["first_error"], plain.reason
        assert plain.status == ("correct" if sol["first_error"] is None else "error")
    if sol["kind"] == "arithmetic":
        assert plain.reason.startswith("arithmetic")
    if sol["kind"] == "misread":
        assert plain.reason.startswith("ungrounded number")


def test_continuation_check_accepts_the_reference_step_only():
    prob, steps, ref = item(next(s for s in SOLUTIONS if s["prompt_id"] == "m01" and s["solution_id"] == 1))
    ok = check_continuation(prob["prompt"], steps[:2], ref[2], reference_steps=ref)
    assert ok.ok and ok.equations == 1
    assert not check_continuation(prob["prompt"], steps[:2], steps[2], reference_steps=ref).ok  # 48 - 35 = 23
    assert not check_continuation(prob["prompt"], steps[:2], "Step 3: so many muffins", reference_steps=ref).ok
    # right arithmetic off the reference path: 48 + 35 = 83 is not a value of the reference
    assert not check_continuation(prob["prompt"], steps[:2], "Step 3: 48 + 35 = 83", reference_steps=ref).ok
    assert check_continuation(prob["prompt"], steps[:2], "Step 3: 48 + 35 = 83", CheckConfig()).ok


def test_equation_reading():
    assert evaluate("2 * (14 + 9)") == 46 and evaluate("3 +") is None and evaluate("1 / 0") is None
    assert agrees(250 / 42, "5.95") and not agrees(10 / 3, "3") and agrees(14.0, "14.00")
    res = check_solution("A box of 1,200 pens costs $3.", ["Step 1: 1,200 x 3 = 3,600 dollars."])
    assert res.status == "correct"


# --- the LLM step judge against the real vLLM server ---------------------------------------------

def _fits(tokenizer_dir: Path, items: list[StepItem], budget: int) -> list[StepItem]:
    """Items whose judge prompt (no rubric) fits the tiny model's context with room for the answer."""
    from transformers import AutoTokenizer

    from prefwork.evaluators.step_judge import JUDGE_DIR, render_prompt

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = (JUDGE_DIR / "template.md").read_text()
    out = []
    for it in items:
        msgs = [{"role": "user", "content": render_prompt(template, "", it.problem, it.steps)}]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        if len(tok(text, add_special_tokens=False)["input_ids"]) < budget:
            out.append(it)
    return out


@pytest.mark.slow
def test_llm_judge_on_vllm_gives_a_valid_step_for_every_solution(vllm_server):
    from prefwork.evaluators.step_judge import LLMStepJudge, StepJudgeConfig

    items = []
    for sol in SOLUTIONS:
        prob, steps, ref = item(sol)
        items.append(StepItem(prob["prompt"], steps, prob["meta"]["answer"], ref))
    short = _fits(Path(vllm_server.model), items, budget=240)[:12]
    assert len(short) >= 6
    judge = LLMStepJudge(StepJudgeConfig(base_url=vllm_server.base_url, model=vllm_server.model, rubric="",
                                         max_tokens=3))
    verdicts = judge.locate(short)
    for it, v, raw in zip(short, verdicts, judge.raw):
        # structured outputs forced one of "0".."N": never unparseable, always a valid index
        assert v.status in ("correct", "error"), v.reason
        assert raw.strip() in [str(i) for i in range(len(it.steps) + 1)]
        assert v.first_error is None if raw.strip() == "0" else v.first_error == int(raw) - 1
    # accept() is the same call on prefix + continuation
    assert len(judge.accept(short[:2])) == 2
    # with the full rubric the prompts outgrow the tiny model's 256-token context: failed verdicts
    # that say why, never a guessed step
    full = LLMStepJudge(StepJudgeConfig(base_url=vllm_server.base_url, model=vllm_server.model))
    too_long = full.locate(items[:1])
    assert too_long[0].status == "failed" and too_long[0].first_error is None and too_long[0].reason
