"""The judges' SQLite answer cache: what goes into the key, persistence, resume, in-run sharing."""
from __future__ import annotations

import asyncio
import sqlite3

import polars as pl

from prefwork.evaluators.judge_cache import JudgeCache, cache_key
from prefwork.evaluators.llm_client import ClientOptions
from prefwork.evaluators.session import JudgeSession
from _judge_helpers import FakeServer, cands, completion

BASE = dict(judge="j", template_hash="t", model="m", inputs={"prompt": "p", "answer": "a"},
            sampling={"temperature": 0.0, "max_tokens": 4}, seed=0)


def test_key_covers_every_input():
    k = cache_key(**BASE)
    assert k == cache_key(**{**BASE, "inputs": {"answer": "a", "prompt": "p"}})  # canonical, order-free
    for change in ({"judge": "j2"}, {"template_hash": "t2"}, {"model": "m2"}, {"inputs": {"prompt": "p", "answer": "b"}},
                   {"sampling": {"temperature": 0.7, "max_tokens": 4}}, {"seed": 1}):
        assert cache_key(**{**BASE, **change}) != k, change


def test_persists_across_connections_and_holds_no_secrets(tmp_path):
    db = tmp_path / "c.sqlite"
    with JudgeCache(db) as c:
        c.put("k", "j", {"value": 4, "raw": "4"})
    with JudgeCache(db) as c:
        assert c.get("k") == {"value": 4, "raw": "4"} and c.get("other") is None and c.count("j") == 1
    cols = [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(answers)")]
    assert cols == ["key", "judge", "value", "created"]
    assert JudgeCache(None).get("k") is None  # disabled cache


def test_rerun_sends_nothing_and_template_change_invalidates(tmp_path):
    server = FakeServer(lambda body, n: completion("4"))
    db = tmp_path / "c.sqlite"

    def run(judge="math_1to5"):
        async def go():
            s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), cache=db, model="fake",
                             http_client=server.client())
            out = await s.ascore(judge, cands(6))
            await s.client.close()
            s.close()
            return s, out
        return asyncio.run(go())
    s1, out1 = run()
    assert len(server.bodies) == 6
    s2, out2 = run()
    assert len(server.bodies) == 6 and s2.usage()["total"]["cached"] == 6
    assert out1.equals(out2)  # same table, cached or not
    run("general_1to5")  # another judge (name + template) shares nothing
    assert len(server.bodies) == 12


def test_identical_rows_share_one_request(tmp_path):
    server = FakeServer(lambda body, n: completion("5"), delay=0.02)
    df = pl.DataFrame({"prompt_id": ["p"] * 5, "prompt": ["q"] * 5, "candidate_id": list(range(5)),
                       "text": ["same answer"] * 5})

    async def go():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), cache=tmp_path / "c.sqlite", model="fake",
                         http_client=server.client())
        out = await s.ascore("math_1to5", df)
        await s.client.close()
        return out
    assert asyncio.run(go())["score"].to_list() == [5.0] * 5
    assert len(server.bodies) == 1


def test_cancelled_run_resumes_from_what_it_finished(tmp_path):
    server = FakeServer(lambda body, n: completion("3"), delay=0.01)
    db = tmp_path / "c.sqlite"

    async def killed():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1", concurrency=2), cache=db, model="fake",
                         http_client=server.client())
        task = asyncio.create_task(s.ascore("math_1to5", cands(40)))
        while s.cache.count() < 10:
            await asyncio.sleep(0.005)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await s.client.close()
        return s.cache.count()
    done = asyncio.run(killed())
    assert 10 <= done < 40
    sent_before = len(server.bodies)

    async def resumed():
        s = JudgeSession(ClientOptions(base_url="http://fake.test/v1"), cache=db, model="fake",
                         http_client=server.client())
        out = await s.ascore("math_1to5", cands(40))
        await s.client.close()
        return out
    out = asyncio.run(resumed())
    assert out["error"].null_count() == 40 and len(server.bodies) - sent_before == 40 - done


def test_sync_calls_share_one_loop_and_http_client(tmp_path):
    """Sync calls reuse the session's loop, client and connection pool; ``close`` releases them."""
    server = FakeServer(lambda body, n: completion("4"))
    with JudgeSession(ClientOptions(base_url="http://fake.test/v1"), model="fake", http_client=server.client()) as s:
        assert s.score("math_1to5", cands(3))["score"].to_list() == [4.0] * 3
        first = s.client._client
        second = s.score("general_1to5", cands(2))  # a closed client would fail here
        assert s.client._client is first and second["error"].null_count() == 2
    assert len(server.bodies) == 5 and s.client._client is None
