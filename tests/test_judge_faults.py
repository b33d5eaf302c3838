"""Fault injection for the LLM judges: a fake OpenAI server (httpx MockTransport) under the real openai client.

Timeouts, 429 with retry-after, 500s, garbage answers, a 400, a budget, rate limits, the concurrency
bound, and keys that must not leak. Fast: no model, no network.
"""
from __future__ import annotations

import asyncio
import json
import time

import httpx2 as httpx  # the transport layer of the installed openai package
import polars as pl
import pytest

from prefwork.evaluators.llm_client import ClientOptions
from prefwork.evaluators.llm_judge import NOT_JUDGED_BUDGET
from prefwork.evaluators.parsers import parse_best_worst, parse_choice, parse_score
from prefwork.evaluators.session import JudgeSession
from prefwork.pipeline.schemas import JUDGMENTS, SCORES, validate

from _judge_helpers import FakeServer, cands, completion


def run_score(server: FakeServer, df: pl.DataFrame, judge="math_1to5", cache=None, **opts):
    async def go():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1", **opts), cache=cache, model="fake",
                         http_client=server.client())
        s.client_backoff = None
        out = await s.ascore(judge, df)
        await s.client.close()
        return s, out
    return asyncio.run(go())


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    import prefwork.evaluators.llm_client as jc
    orig = jc.JudgeClient.__init__

    def init(self, *a, **kw):
        kw.setdefault("backoff_base", 0.01)
        orig(self, *a, **kw)
    monkeypatch.setattr(jc.JudgeClient, "__init__", init)


# --- parsing --------------------------------------------------------------------------------------

def test_parse_score_forms():
    assert parse_score("4", 1, 5) == 4
    assert parse_score('{"score": 5}', 1, 5) == 5
    assert parse_score("The answer is right but terse. Score: 4", 1, 5) == 4
    assert parse_score("Verdict [[2]]", 1, 5) == 2
    assert parse_score("3/5", 1, 5) == 3
    assert parse_score("7", 1, 5) is None
    assert parse_score("banana", 1, 5) is None
    assert parse_score("", 1, 5) is None
    assert parse_best_worst('{"best": 2, "worst": 3}', 3) == {"best": 1, "worst": 2}
    assert parse_best_worst("Best: 1. Worst: 4.", 4) == {"best": 0, "worst": 3}
    assert parse_best_worst('{"best": 2, "worst": 2}', 3) is None
    assert parse_choice("A", ("A", "B", "tie")) == "A"
    assert parse_choice('{"winner": "tie"}', ("A", "B", "tie")) == "tie"
    assert parse_choice("After comparing, the winner is B.", ("A", "B", "tie")) == "B"
    assert parse_choice("both are fine", ("A", "B", "tie")) is None


# --- faults ---------------------------------------------------------------------------------------

def test_429_retry_after_is_honoured():
    def script(body, n):
        return httpx.Response(429, headers={"retry-after": "0.3"}, json={"error": {"message": "slow down"}}) \
            if n == 1 else completion("5")
    server = FakeServer(script)
    s, out = run_score(server, cands(1), concurrency=1)
    assert out["score"].to_list() == [5.0] and out["error"].to_list() == [None]
    assert server.times[1] - server.times[0] >= 0.28  # waited as asked, not our 10 ms backoff
    assert s.usage()["judges"]["math_1to5"]["retries"] == 1


def test_500s_and_timeouts_are_retried_then_succeed():
    def script(body, n):
        if n in (1, 2):
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if n == 3:
            raise httpx.ReadTimeout("read timed out")
        return completion("3")
    server = FakeServer(script)
    s, out = run_score(server, cands(1), concurrency=1)
    assert out["score"].to_list() == [3.0]
    assert len(server.bodies) == 4 and s.usage()["total"]["retries"] == 3


def test_lasting_failures_are_recorded_not_dropped(tmp_path):
    server = FakeServer(lambda body, n: httpx.Response(503, json={"error": {"message": "down"}}))
    s, out = run_score(server, cands(2), cache=tmp_path / "c.sqlite", max_retries=2)
    assert out.height == 2 and out["score"].null_count() == 2
    assert all("gave up after 3 attempts" in e for e in out["error"].to_list())
    assert len(server.bodies) == 6
    validate(out, SCORES)
    assert s.cache.count() == 0  # failures never cached


def test_400_is_not_retried():
    server = FakeServer(lambda body, n: httpx.Response(400, json={"error": {"message": "prompt too long"}}))
    s, out = run_score(server, cands(1))
    assert len(server.bodies) == 1 and "prompt too long" in out["error"][0]


def test_garbage_answers_keep_raw_text_and_are_not_cached(tmp_path):
    server = FakeServer(lambda body, n: completion("I like turtles"))
    db = tmp_path / "c.sqlite"
    _, out = run_score(server, cands(2), cache=db)
    assert out["score"].null_count() == 2
    assert all(e.startswith("unparsable judge answer") for e in out["error"].to_list())
    assert json.loads(out["detail"][0])["raw"] == "I like turtles"
    _, again = run_score(server, cands(2), cache=db)
    assert len(server.bodies) == 4  # asked again: a garbage answer is never served from the cache


def test_structured_output_modes_in_requests():
    server = FakeServer(lambda body, n: completion('{"score": 4}'))
    run_score(server, cands(1))
    assert server.bodies[0]["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}

    async def go(mode):
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), model="fake", structured=mode,
                         http_client=server.client())
        out = await s.ascore("math_1to5", cands(1, prompt="another"))
        await s.client.close()
        return out
    assert asyncio.run(go("openai"))["score"].to_list() == [4.0]
    rf = server.bodies[-1]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    asyncio.run(go("none"))
    assert "response_format" not in server.bodies[-1] and "structured_outputs" not in server.bodies[-1]


def test_concurrency_bound_and_request_rate_limit():
    server = FakeServer(lambda body, n: completion("4"), delay=0.05)
    run_score(server, cands(24), concurrency=4)
    assert server.max_in_flight == 4

    server = FakeServer(lambda body, n: completion("4"))
    t0 = time.monotonic()
    run_score(server, cands(12), concurrency=16, requests_per_min=600)  # 10/s, bursts of 10
    assert time.monotonic() - t0 >= 0.15  # the two requests over the burst wait for the bucket


def test_max_cost_stops_cleanly():
    server = FakeServer(lambda body, n: completion("4", prompt_tokens=1000, completion_tokens=1), delay=0.01)
    # each request costs 1000 tokens x 1000 USD/Mtok = 1 USD, and reserves its upper bound (about 2 USD:
    # one token per byte of its ~1,900 bytes) before it is sent: a 3.5 USD budget allows at most 3 calls
    opts = dict(concurrency=2, max_cost=3.5)

    async def go():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1", **opts), model="fake",
                         http_client=server.client())
        spec_price = s.spec("math_1to5").with_overrides(price_in=1000.0)
        s.spec = lambda name: spec_price  # a pricey judge
        out = await s.ascore("math_1to5", cands(10, prompt="x" * 1000))
        await s.client.close()
        return s, out
    s, out = asyncio.run(go())
    assert out.height == 10
    judged = out.filter(pl.col("error").is_null()).height
    assert 1 <= judged <= 3 and out.filter(pl.col("error") == NOT_JUDGED_BUDGET).height == 10 - judged
    assert s.usage()["total"]["cost_usd"] <= 3.5 and s.stopped_by_budget


def test_max_cost_is_never_exceeded_with_requests_in_flight():
    """Issue 19, item 10: each request reserves an upper bound of its cost before it is sent and settles
    with the real usage after, so with 4 requests in flight and a server that counts twice the tokens
    of the chars/4 estimate, spending stays within the budget (the estimate let every slot overshoot)."""
    def script(body, n):
        chars = sum(len(m["content"]) for m in body["messages"])
        return completion("4", prompt_tokens=chars // 2, completion_tokens=1)  # 2 chars a token: ~0.95 USD
    server = FakeServer(script, delay=0.05)

    async def go():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1", concurrency=4, max_cost=5.0), model="fake",
                         http_client=server.client())
        spec_price = s.spec("math_1to5").with_overrides(price_in=1000.0)
        s.spec = lambda name: spec_price
        out = await s.ascore("math_1to5", cands(20, prompt="x" * 1000))
        await s.client.close()
        return s, out
    s, out = asyncio.run(go())
    judged = out.filter(pl.col("error").is_null()).height
    assert s.usage()["total"]["cost_usd"] <= 5.0 and s.stopped_by_budget
    assert judged >= 3 and out.filter(pl.col("error") == NOT_JUDGED_BUDGET).height == 20 - judged
    assert server.max_in_flight >= 2  # concurrent requests did share the budget


def test_api_key_is_sent_but_never_recorded(monkeypatch, tmp_path):
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("PREFWORK_FAKE_KEY", secret)
    server = FakeServer(lambda body, n: httpx.Response(
        401, json={"error": {"message": f"Incorrect API key provided: {secret}"}}))
    s, out = run_score(server, cands(1), cache=tmp_path / "c.sqlite", api_key_env="PREFWORK_FAKE_KEY")
    assert server.headers[0]["authorization"] == f"Bearer {secret}"
    assert secret not in out["error"][0] and "***" in out["error"][0]
    s.write_usage(tmp_path)
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f


def test_pairwise_both_orders_tie_on_disagreement_and_identical_without_call():
    # the judge always prefers the answer shown first: both orders disagree -> every judgment a tie
    server = FakeServer(lambda body, n: completion("A"))
    model = pl.DataFrame({"prompt_id": ["p0", "p1", "p2"], "prompt": ["q0", "q1", "q2"], "candidate_id": [0, 0, 0],
                          "text": ["m0", "same", "m2"], "model": ["pol"] * 3})
    base = model.with_columns(pl.Series("text", ["b0", "same", "b2"]), pl.lit("sft").alias("model"))

    async def go(orders, answer_fn=None):
        if answer_fn:
            server.script = answer_fn
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), model="fake", orders=orders,
                         http_client=server.client())
        out = await s.acompare("pairwise", model, base, with_detail=True)
        await s.client.close()
        return out
    out = asyncio.run(go("both"))
    validate(out, JUDGMENTS)
    assert out["preference"].to_list() == [0.5, 0.5, 0.5]
    assert len(server.bodies) == 4  # 2 pairs x 2 orders; the identical pair made no call
    assert json.loads(out.filter(pl.col("prompt_id") == "p1")["detail"][0]) == {"identical": True}

    # a judge that recognises the model's answer (text starting with "m") in either position
    def smart(body, n):
        user = body["messages"][-1]["content"]
        a = user.split("[Answer A]")[1].split("[Answer B]")[0].strip()
        return completion("A" if a.startswith("m") else "B")
    n0 = len(server.bodies)
    out = asyncio.run(go("both", smart))
    assert out["preference"].to_list() == [1.0, 0.5, 1.0]
    out = asyncio.run(go("random", smart))
    assert out["preference"].to_list() == [1.0, 0.5, 1.0]
    assert len(server.bodies) - n0 == 4 + 2  # random order: one call per pair

    from prefwork.evaluators.winrate import summarize
    assert summarize(out.drop("detail")).to_dict()  # usable by the win-rate code


def test_combined_judge_weights_and_rule_cap():
    server = FakeServer(lambda body, n: completion("5"))
    meta = json.dumps({"subject": "tea", "keywords": ["tea"], "words": 3})
    df = pl.DataFrame({"prompt_id": ["s", "s", "m"], "prompt": ["Write a slogan about tea."] * 2 + ["1+1?"],
                       "candidate_id": [0, 1, 0], "text": ["Drink more tea", "Tea is the best drink ever", "2"],
                       "task": ["slogan", "slogan", "math"], "meta": [meta, meta, None]})

    async def go(cap):
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), model="fake", rule_cap=cap,
                         http_client=server.client())
        out = await s.ascore("general_1to5:3,rules:1", df)
        await s.client.close()
        return out
    out = asyncio.run(go(None))
    validate(out, SCORES)
    d1 = json.loads(out["detail"][1])
    rules_1 = d1["judges"]["rules"]["score"]
    assert out["score"][0] == pytest.approx(1.0)  # every rule passes and the grade is 5
    assert out["score"][1] == pytest.approx((3 * 1.0 + rules_1) / 4)
    assert json.loads(out["detail"][2])["judges"]["rules"] == {"applies": False} and out["score"][2] == 1.0
    capped = asyncio.run(go(0.5))
    assert capped["score"][1] == 0.5 and json.loads(capped["detail"][1])["rule_capped"] is True
    assert capped["score"][0] == pytest.approx(1.0)


def test_listwise_best_worst_one_call_per_prompt():
    server = FakeServer(lambda body, n: completion('{"best": 2, "worst": 1}'))
    df = pl.DataFrame({"prompt_id": ["p"] * 3 + ["q"] * 3, "prompt": ["1+1?"] * 3 + ["2+2?"] * 3,
                       "candidate_id": [0, 1, 2] * 2, "text": ["3", "2", "two"] * 2})

    async def go():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), model="fake", listwise=True,
                         http_client=server.client())
        out = await s.ascore("math_1to5", df)
        await s.client.close()
        return out
    out = asyncio.run(go())
    assert len(server.bodies) == 2
    assert out["score"].to_list() == [1.0, 5.0, 3.0] * 2
    assert "regex" in server.bodies[0]["structured_outputs"]


def test_unknown_judge_lists_valid_names():
    with pytest.raises(ValueError, match="known: rules, ifeval, general_1to5, math_1to5, pairwise"):
        JudgeSession().spec("nope")
