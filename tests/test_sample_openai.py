"""The OpenAI-compatible engine: a fake server for retries and errors, a REAL vLLM server for the rest.

The real server is ``tests/conftest.py``'s session-scoped ``vllm_server``
(``python -m vllm.entrypoints.openai.api_server``, CPU build, the tiny random policy,
loopback only), shared with the other suites so CI starts it once.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from _sample_helpers import ROOT, check_contract, free_port, prompts_frame, write_prompts
from prefwork.pipeline.engines_openai import EngineError, OpenAIEngine
from prefwork.pipeline.sample import SampleConfig, sample

CFG = SampleConfig(n=4, max_tokens=16, shard_size=3, seed=5)


# ---------------------------------------------------------------- fake server (fast unit tests)
class Fake(BaseHTTPRequestHandler):
    """Answers a scripted list of statuses, then a valid chat completion with ``n`` choices."""

    script: list[int] = []
    seen: list[dict] = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Fake.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        status = Fake.script.pop(0) if Fake.script else 200
        if status != 200:
            msg = {"error": {"message": f"nope, key {self.headers.get('Authorization')}", "type": "x", "code": status}}
            return self._send(status, msg)
        choices = [{"index": j, "finish_reason": "length", "logprobs": {"content": [
            {"token": "a", "logprob": -1.0, "bytes": None, "top_logprobs": []}] * 3},
            "message": {"role": "assistant", "content": f" cand {j} "}} for j in range(body.get("n", 1))]
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 3 * len(choices),
                                                       "total_tokens": 1 + 3 * len(choices)}})

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def fake(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Fake.script, Fake.seen = [], []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-42")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_retries_429_and_5xx_then_succeeds(fake, tmp_path):
    Fake.script = [429, 503, 500]
    engine = OpenAIEngine(fake, model="m", max_retries=3, backoff_s=0.01)
    df = pl.read_parquet(sample(prompts_frame(1), engine, tmp_path / "c.parquet", CFG, "m"))
    assert df["text"].to_list() == [f"cand {j}" for j in range(CFG.n)] and (df["num_tokens"] == 3).all()
    assert len(Fake.seen) == 4 and Fake.seen[-1]["body"]["n"] == CFG.n
    assert Fake.seen[0]["auth"] == "Bearer sk-test-secret-42"  # the key comes from the environment


def test_persistent_failure_is_a_clear_error_and_keeps_no_secret(fake, tmp_path):
    Fake.script = [500] * 10
    engine = OpenAIEngine(fake, model="m", max_retries=2, backoff_s=0.01)
    with pytest.raises(EngineError, match="failed after 3 attempts") as err:
        sample(prompts_frame(1), engine, tmp_path / "c.parquet", CFG, "m")
    Fake.script = [401]
    with pytest.raises(EngineError, match="authentication failed") as err2:
        sample(prompts_frame(1), engine, tmp_path / "c.parquet", CFG, "m")
    assert "secret" not in str(err.value) + str(err2.value)


def test_unreachable_server(tmp_path):
    engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=1, backoff_s=0.01)
    with pytest.raises(EngineError, match=r"failed after 2 attempts: APIConnectionError"):
        sample(prompts_frame(2), engine, tmp_path / "c.parquet", CFG, "m")


# ---------------------------------------------------------------- real vLLM server
def cfg(**kw) -> SampleConfig:
    return SampleConfig(**{**CFG.__dict__, **kw})


@pytest.mark.slow
def test_real_server_contract_and_seeds(vllm_server, tmp_path):
    engine = OpenAIEngine(vllm_server.base_url)  # model: the server's first
    assert engine.model == vllm_server.model
    prompts = prompts_frame(7)
    a = pl.read_parquet(sample(prompts, engine, tmp_path / "a.parquet", CFG, "tiny"))
    check_contract(a, prompts, CFG.n, CFG.max_tokens)
    for _, g in a.group_by("prompt_id"):
        assert g["text"].n_unique() == CFG.n
    b = pl.read_parquet(sample(prompts, engine, tmp_path / "b.parquet", CFG, "tiny"))
    assert a.equals(b)
    c = pl.read_parquet(sample(prompts, engine, tmp_path / "c.parquet", cfg(seed=6), "tiny"))
    assert not a["text"].equals(c["text"])
    # one request per candidate with seed + j gives the same rows as n in one request
    single = OpenAIEngine(vllm_server.base_url, n_per_request=False)
    d = pl.read_parquet(sample(prompts, single, tmp_path / "d.parquet", CFG, "tiny"))
    assert d.select("prompt_id", "candidate_id", "seed", "text").equals(a.select("prompt_id", "candidate_id", "seed", "text"))
    e = pl.read_parquet(sample(prompts, OpenAIEngine(vllm_server.base_url, api="completions"), tmp_path / "e.parquet",
                               CFG, "tiny"))
    check_contract(e, prompts, CFG.n, CFG.max_tokens)


@pytest.mark.slow
def test_real_server_stop_and_long_prompt(vllm_server, tmp_path):
    from prefwork.pipeline.schemas import SchemaError

    engine = OpenAIEngine(vllm_server.base_url)
    prompts = prompts_frame(6)
    free = pl.read_parquet(sample(prompts, engine, tmp_path / "free.parquet", CFG, "tiny"))
    words = [w for t in free["text"] for w in t.split() if len(w) >= 2]
    stop = max(set(words), key=words.count)[:2]
    df = pl.read_parquet(sample(prompts, engine, tmp_path / "stop.parquet", cfg(stop=[stop]), "tiny"))
    check_contract(df, prompts, CFG.n, CFG.max_tokens)
    assert not df["text"].str.contains(stop, literal=True).any()
    assert (df["finish_reason"] == "stop").sum() > 0
    long = prompts_frame(2, chat_every=0).with_columns(
        pl.when(pl.col("prompt_id") == "p0000").then(pl.lit("word " * 300)).otherwise(pl.col("prompt")).alias("prompt"))
    with pytest.raises(SchemaError, match="context window"):
        sample(long, engine, tmp_path / "e.parquet", CFG, "tiny")
    out = sample(long, engine, tmp_path / "s.parquet", cfg(on_long_prompt="skip"), "tiny")
    assert set(pl.read_parquet(out)["prompt_id"]) == {"p0001"}
    assert json.loads(out.with_suffix(".skipped.json").read_text())[0]["prompt_id"] == "p0000"


@pytest.mark.slow
def test_server_lost_mid_run_keeps_finished_shards(vllm_server, tmp_path):
    engine = OpenAIEngine(vllm_server.base_url, max_retries=1, backoff_s=0.01)

    class Dies:  # the server "goes away" after two shards
        name, calls = "openai", 0

        def generate(self, prompts, c, seed):
            Dies.calls += 1
            if Dies.calls > 2:
                engine.base_url = f"http://127.0.0.1:{free_port()}/v1"
            return engine.generate(prompts, c, seed)

    prompts, out = prompts_frame(10), tmp_path / "r.parquet"
    with pytest.raises(EngineError, match="APIConnectionError"):
        sample(prompts, Dies(), out, CFG, "tiny")
    assert len(list(tmp_path.glob("r.parquet.shards/*/shard-*.parquet"))) == 2
    engine.base_url = vllm_server.base_url
    check_contract(pl.read_parquet(sample(prompts, engine, out, CFG, "tiny")), prompts, CFG.n, CFG.max_tokens)


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_without_resampling(vllm_server, tmp_path):
    """SIGKILL a real ``prefwork sample`` mid-way; the restart reuses every finished shard untouched."""
    prompts = prompts_frame(120)
    pfile, out = write_prompts(tmp_path / "p.jsonl", prompts), tmp_path / "c.parquet"
    cmd = [sys.executable, "-m", "prefwork.flows.cli", "sample", "--engine", "openai", "--model", "", "--base-url",
           vllm_server.base_url, "--prompts", str(pfile), "--out", str(out), "--n", "4", "--max-tokens", "16",
           "--shard-size", "4", "--max-concurrency", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("c.parquet.shards/*/shard-*.parquet"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    shards = sorted(tmp_path.glob("c.parquet.shards/*/shard-*.parquet"))
    assert 3 <= len(shards) < 30 and not out.exists()
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards}
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(shards) * 4} resumed" in again.stderr
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards} == stamps  # none sampled twice
    final = pl.read_parquet(out)
    check_contract(final, prompts, 4, 16)
    clean = pl.read_parquet(sample(prompts, OpenAIEngine(vllm_server.base_url), tmp_path / "clean.parquet",
                                   SampleConfig(n=4, max_tokens=16, shard_size=4), ""))
    assert final.drop("model").equals(clean.drop("model"))
