"""Bad inputs and a misbehaving server, tried on the REAL CLI (``python -m prefwork.flows.cli`` in a subprocess).

Issue 19: nothing leaks, nothing is silently dropped, no wrong pair trains. Each case asserts the exit
code, one clear ``error:`` line that names the file/row/field or the option, no traceback, and that
files written before are byte-identical. The rules under test and their one home each:

(a) one redaction of server text (``pipeline.run.redact_text``) -> ``test_no_secret_*``
(b) schema + key uniqueness at the read boundary (``pipeline.schemas.validate``) -> ``test_duplicate_*``,
    ``test_pairs_schema_error_names_the_file``
(c) no pair with chosen == rejected (``pipeline.pairs.drop_identical``) -> ``test_identical_*``
(d) all failed -> non-zero, partial -> counts, ``--strict`` (``flows.outcome.finish``) -> ``test_*_failed*``
(e) no empty result over an existing output without ``--allow-empty`` (``pipeline.store.guard_empty``)
(f) options checked before any work (field metadata, ``pipeline.checks``) -> ``test_bad_option_*``
(g) one line, no traceback, ``--debug`` shows it (``flows.cli.main``) -> every test here
Fast: tiny files, the tiny random policy, a fake OpenAI server on 127.0.0.1 written below.
"""
from __future__ import annotations

import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from conftest import run_cli

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"
ENV = {"PREFWORK_PROGRESS": "0", "OPENAI_API_KEY": SECRET, "COLUMNS": "100"}


# ------------------------------------------------------------------------------------------- helpers

def cli(cwd: Path, *args, timeout: int = 240):
    return run_cli(*[str(a) for a in args], cwd=cwd, env=ENV, timeout=timeout)


def error_line(proc) -> str:
    """The one ``error`` line of a failed command (argparse's ``prog: error:`` counts too)."""
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, f"want exactly one error line, got:\n{proc.stderr[-3000:]}"
    return lines[0]


def assert_clear_error(proc, *needles: str, code: int = 1) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == code, f"exit {proc.returncode} (want {code}):\n{out[-3000:]}"
    line = error_line(proc)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def snapshot(*paths: Path) -> dict:
    return {p: p.read_bytes() for p in paths}


def assert_unchanged(before: dict) -> None:
    for p, data in before.items():
        assert p.exists() and p.read_bytes() == data, f"{p} changed"


def assert_no_secret(tmp: Path, proc) -> None:
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert SECRET[:12] not in proc.stdout + proc.stderr  # not even a prefix of the key
    for f in tmp.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def write_jsonl(path: Path, rows: list[dict], bom: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


SLOGAN = json.dumps({"subject": "tea", "keywords": ["tea"], "words": 3})


def candidates(texts: dict[str, list[str]], task: str | None = None, meta: str | None = None) -> pl.DataFrame:
    rows = [{"prompt_id": pid, "prompt": f"Question {pid}?", "candidate_id": i, "text": t, "model": "m", "seed": i,
             "finish_reason": "stop", "num_tokens": 3, "task": task, "meta": meta}
            for pid, ts in texts.items() for i, t in enumerate(ts)]
    return pl.DataFrame(rows, schema_overrides={"task": pl.String, "meta": pl.String})


def scores(values: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame([{"prompt_id": pid, "candidate_id": i, "judge": "j", "score": s, "detail": "{}", "error": None}
                         for pid, ss in values.items() for i, s in enumerate(ss)],
                        schema_overrides={"error": pl.String})


def pairs_frame(n: int, identical: int = 0) -> pl.DataFrame:
    rows = [{"prompt_id": f"p{i}", "prompt": f"Say something about {i}.", "chosen": f"good answer {i}",
             "rejected": f"good answer {i}" if i < identical else f"bad {i}", "chosen_id": 0, "rejected_id": 1,
             "chosen_score": 5.0, "rejected_score": 1.0, "margin": 4.0} for i in range(n)]
    return pl.DataFrame(rows)


def good_parquet(path: Path) -> Path:
    """An earlier, good output the failing command must leave as it was."""
    pl.DataFrame({"earlier": ["good", "output"]}).write_parquet(path)
    return path


# ------------------------------------------------------------------------- a fake OpenAI server

class FakeOpenAI(BaseHTTPRequestHandler):
    """127.0.0.1 only. ``mode`` picks the answer of every POST:

    echo400: 400 whose body echoes the Authorization header (a server that quotes the key back);
    status:N: HTTP N for every request; judge: a 1-5 grade ("4"), except 400 for answers holding "BAD";
    sample: chat completions, except a context-length 400 for prompts holding "LONG".
    """

    mode = "judge"
    requests = 0

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "x"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests += 1
        mode, text = FakeOpenAI.mode, json.dumps(body.get("messages", ""))
        if mode == "echo400":
            echo = f"invalid request, you sent {self.headers.get('Authorization')}"
            return self._send(400, {"error": {"message": echo, "type": "invalid_request_error"}})
        if mode.startswith("status:"):
            return self._send(int(mode[7:]), {"error": {"message": f"nope ({self.headers.get('Authorization')})"}})
        if mode == "judge" and "BAD" in text:
            return self._send(400, {"error": {"message": "this request is not allowed"}})
        if mode == "sample" and "LONG" in text:
            return self._send(400, {"error": {"message": "This model's maximum context length is 256 tokens"}})
        n = body.get("n") or 1
        content = "4" if mode == "judge" else None
        choices = [{"index": j, "finish_reason": "stop", "logprobs": None,
                    "message": {"role": "assistant", "content": content or f"answer {j}"}} for j in range(n)]
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "fake", "choices": choices,
                         "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}})

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    FakeOpenAI.mode, FakeOpenAI.requests = "judge", 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def judge_args(server_url: str, inp: Path, out: Path, *extra):
    return ("judge", "--judge", "math_1to5", "--in", inp, "--out", out, "--base-url", server_url, "--model", "fake",
            "--structured", "none", "--max-retries", "0", "--cache", "", *extra)


def openai_sample_args(server_url: str, prompts: Path, out: Path, *extra):
    return ("sample", "--engine", "openai", "--base-url", server_url, "--model", "fake", "--prompts", prompts,
            "--out", out, "--n", "2", "--max-retries", "0", *extra)


@pytest.fixture()
def prompts(tmp_path) -> Path:
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt_id": "a", "prompt": "Name a colour."},
                                                    {"prompt_id": "b", "prompt": "Name a fruit."}])


# ------------------------------------------------------------ 1 / (a): no secret in any output

@pytest.mark.parametrize("command", ["sample", "judge"])
def test_no_secret_when_the_server_echoes_the_key(tmp_path, server, prompts, command):
    FakeOpenAI.mode = "echo400"
    out = tmp_path / "out.parquet"
    if command == "sample":
        proc = cli(tmp_path, *openai_sample_args(server, prompts, out))
        assert_clear_error(proc, "400", server)
    else:
        candidates({"a": ["x", "y"]}).write_parquet(tmp_path / "c.parquet")
        proc = cli(tmp_path, *judge_args(server, tmp_path / "c.parquet", out))
        assert_clear_error(proc, "all 2 rows failed")
    assert FakeOpenAI.requests >= 1
    assert_no_secret(tmp_path, proc)
    assert "***" in proc.stderr  # the server's text is kept, the key in it is not


def test_no_secret_with_debug_traceback(tmp_path, server, prompts):
    """``--debug`` shows the traceback, still without the key."""
    FakeOpenAI.mode = "echo400"
    proc = cli(tmp_path, "--debug", *openai_sample_args(server, prompts, tmp_path / "out.parquet"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert_no_secret(tmp_path, proc)


# ------------------------------------------------------------ 2 / (c): no pair with chosen == rejected

def test_identical_texts_never_become_a_pair(tmp_path):
    # p0: the worst-scored answer repeats the best one's text; p1: a fine pair; p2: all its answers alike
    candidates({"p0": ["same", "other", "same"], "p1": ["good", "bad"], "p2": ["twin", "twin"]}).write_parquet(
        tmp_path / "c.parquet")
    scores({"p0": [5.0, 3.0, 1.0], "p1": [4.0, 2.0], "p2": [5.0, 1.0]}).write_parquet(tmp_path / "s.parquet")
    out = tmp_path / "pairs.parquet"
    proc = cli(tmp_path, "pairs", "--candidates", tmp_path / "c.parquet", "--scores", tmp_path / "s.parquet",
               "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = pl.read_parquet(out)
    assert (pairs["chosen"] != pairs["rejected"]).all()
    assert sorted(zip(pairs["prompt_id"], pairs["rejected"])) == [("p0", "other"), ("p1", "bad")]
    stats = json.loads((tmp_path / "pairs.parquet.stats.json").read_text())
    assert stats["dropped_identical"] == 1  # p2, counted like ties


def test_identical_pairs_file_is_refused_by_the_trainer(tmp_path, tiny_random_policy):
    data = tmp_path / "pairs.parquet"
    pairs_frame(3, identical=3).write_parquet(data)
    proc = cli(tmp_path, "train", "dpo", "--model", tiny_random_policy, "--data", data, "--dry-run",
               "--out", tmp_path / "runs")
    assert_clear_error(proc, str(data), "3 of 3 pairs", "chosen", "rejected")


def test_some_identical_pairs_are_dropped_with_a_warning(tmp_path, tiny_random_policy):
    data = tmp_path / "pairs.parquet"
    pairs_frame(4, identical=1).write_parquet(data)
    proc = cli(tmp_path, "train", "dpo", "--model", tiny_random_policy, "--data", data, "--dry-run",
               "--out", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 4 pairs" in proc.stdout + proc.stderr and "dropped" in proc.stdout + proc.stderr


# ------------------------------------------------------------ 3 / (d): all failed -> non-zero

@pytest.mark.parametrize("status", [400, 501])
def test_judge_every_row_failed_exits_non_zero(tmp_path, server, status):
    FakeOpenAI.mode = f"status:{status}"
    candidates({"a": ["x", "y", "z"], "b": ["u", "v", "w"]}).write_parquet(tmp_path / "c.parquet")
    out = good_parquet(tmp_path / "scores.parquet")
    before = snapshot(out)
    proc = cli(tmp_path, *judge_args(server, tmp_path / "c.parquet", out))
    assert_clear_error(proc, "all 6 rows failed", str(status))
    assert_unchanged(before)
    assert_no_secret(tmp_path, proc)


def test_judge_partial_failure_exits_0_with_counts_and_strict_fails(tmp_path, server):
    candidates({"a": ["fine", "BAD"], "b": ["fine", "fine too"]}).write_parquet(tmp_path / "c.parquet")
    out = tmp_path / "scores.parquet"
    proc = cli(tmp_path, *judge_args(server, tmp_path / "c.parquet", out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 4 rows failed" in proc.stderr
    assert pl.read_parquet(out)["error"].null_count() == 3
    strict = cli(tmp_path, *judge_args(server, tmp_path / "c.parquet", tmp_path / "s2.parquet", "--strict"))
    assert_clear_error(strict, "1 of 4 rows failed", "--strict")


def test_sample_every_prompt_skipped_exits_non_zero(tmp_path, server):
    FakeOpenAI.mode = "sample"
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "LONG one"}, {"prompt": "LONG two"}])
    out = good_parquet(tmp_path / "c.parquet")
    before = snapshot(out)
    proc = cli(tmp_path, *openai_sample_args(server, prompts, out, "--on-long-prompt", "skip"))
    assert_clear_error(proc, "all 2 prompts", "skipped")
    assert_unchanged(before)


def test_sample_partial_skip_counts_and_strict(tmp_path, server):
    FakeOpenAI.mode = "sample"
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "LONG one"}, {"prompt": "short"}])
    proc = cli(tmp_path, *openai_sample_args(server, prompts, tmp_path / "c.parquet", "--on-long-prompt", "skip"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 2 prompts skipped" in proc.stderr
    skipped = json.loads((tmp_path / "c.skipped.json").read_text())
    assert "context" in skipped[0]["reason"]
    strict = cli(tmp_path, *openai_sample_args(server, prompts, tmp_path / "d.parquet", "--on-long-prompt", "skip",
                                               "--strict"))
    assert_clear_error(strict, "1 of 2 prompts skipped", "--strict")


# ------------------------------------------------------------ 4 / (b): key uniqueness at the read boundary

def test_duplicate_candidates_are_refused(tmp_path):
    cands = candidates({"a": ["x", "y"]})
    pl.concat([cands, cands.head(1)]).write_parquet(tmp_path / "c.parquet")
    out = good_parquet(tmp_path / "scores.parquet")
    before = snapshot(out)
    proc = cli(tmp_path, "judge", "--judge", "rules", "--in", tmp_path / "c.parquet", "--out", out)
    assert_clear_error(proc, str(tmp_path / "c.parquet"), "row 3", "prompt_id, candidate_id", "duplicate")
    assert_unchanged(before)


def test_duplicate_scores_are_refused_by_pairs(tmp_path):
    candidates({"a": ["x", "y"]}).write_parquet(tmp_path / "c.parquet")
    s = scores({"a": [5.0, 1.0]})
    pl.concat([s, s.tail(1)]).write_parquet(tmp_path / "s.parquet")
    out = good_parquet(tmp_path / "pairs.parquet")
    before = snapshot(out)
    proc = cli(tmp_path, "pairs", "--candidates", tmp_path / "c.parquet", "--scores", tmp_path / "s.parquet",
               "--out", out)
    assert_clear_error(proc, str(tmp_path / "s.parquet"), "row 3", "candidate_id", "duplicate")
    assert_unchanged(before)


def test_duplicate_pairs_are_refused_by_the_trainer(tmp_path, tiny_random_policy):
    p = pairs_frame(3)
    data = tmp_path / "pairs.parquet"
    pl.concat([p, p.head(1)]).write_parquet(data)
    proc = cli(tmp_path, "train", "dpo", "--model", tiny_random_policy, "--data", data, "--dry-run",
               "--out", tmp_path / "runs")
    assert_clear_error(proc, str(data), "row 4", "chosen_id", "duplicate")


# ------------------------------------------------------------ 6 / (g): one line, never a traceback

def test_openai_engine_with_no_server(tmp_path, prompts):
    from _sample_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = cli(tmp_path, "sample", "--engine", "openai", "--model", "", "--base-url", url, "--max-retries", "0",
               "--prompts", prompts, "--out", tmp_path / "c.parquet")
    assert_clear_error(proc, url, "connect")
    assert not (tmp_path / "c.parquet.shards").exists()


def test_datasets_refresh_bad_prompts_fails_before_the_flow(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    proc = cli(tmp_path, "datasets", "refresh", "--workspace", tmp_path / "ws", "--prompts", bad, timeout=120)
    assert_clear_error(proc, str(bad), "row 2", "prompt")
    assert not (tmp_path / "ws").exists()  # no Prefect server, no dataset, no run directory


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    d = tmp_path / "not_parquet.parquet"
    d.write_text("this is not parquet")
    proc = cli(tmp_path, "judge", "--judge", "rules", "--in", d, "--out", tmp_path / "o.parquet")
    assert_clear_error(proc, str(d), "not a readable Parquet file")
    debug = cli(tmp_path, "--debug", "judge", "--judge", "rules", "--in", d, "--out", tmp_path / "o.parquet")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


# model folders (item 6): the lead's model references (pipeline/models.py) give these their one line


@pytest.fixture()
def weightless_model(tmp_path, tiny_random_policy) -> Path:
    import shutil

    d = tmp_path / "no_weights"
    shutil.copytree(tiny_random_policy, d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    return d


def test_model_folder_without_weights_sample(tmp_path, weightless_model, prompts):
    proc = cli(tmp_path, "sample", "--engine", "transformers", "--model", weightless_model, "--prompts", prompts,
               "--out", tmp_path / "c.parquet")
    assert_clear_error(proc, str(weightless_model), "weights")


def test_model_folder_without_weights_train(tmp_path, weightless_model):
    data = tmp_path / "pairs.parquet"
    pairs_frame(4).write_parquet(data)
    proc = cli(tmp_path, "train", "dpo", "--model", weightless_model, "--data", data, "--max-steps", "1",
               "--out", tmp_path / "runs")
    assert_clear_error(proc, str(weightless_model), "weights")


def test_loop_policy_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    proc = cli(tmp_path, "loop", "--policy", missing, "--workspace", tmp_path / "ws", timeout=300)
    assert_clear_error(proc, str(missing), "--policy")
    assert not list((tmp_path / "ws").glob("*-loop")) if (tmp_path / "ws").exists() else True


# ------------------------------------------------------------ 7 / (b): errors name the file and row

def test_pairs_schema_error_names_the_file(tmp_path):
    candidates({"a": ["x", "y"]}).write_parquet(tmp_path / "c.parquet")
    scores({"a": [5.0, 1.0]}).drop("score").write_parquet(tmp_path / "s.parquet")
    proc = cli(tmp_path, "pairs", "--candidates", tmp_path / "c.parquet", "--scores", tmp_path / "s.parquet",
               "--out", tmp_path / "p.parquet")
    line = assert_clear_error(proc, str(tmp_path / "s.parquet"), "field 'score'")
    assert "input" not in line


LONG = "word " * 400


@pytest.mark.parametrize("command", ["sample", "winrate"])
def test_long_prompt_error_names_file_row_and_an_offered_option(tmp_path, tiny_random_policy, command):
    rows = [{"prompt_id": "ok", "prompt": "A slogan about tea.", "reference": "Drink more tea"},
            {"prompt_id": "long", "prompt": LONG, "reference": "Tea for all"}]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{**r, "task": "slogan", "meta": SLOGAN} for r in rows])
    if command == "sample":
        args = ("sample", "--engine", "transformers", "--model", tiny_random_policy, "--prompts", prompts,
                "--out", tmp_path / "c.parquet", "--n", "1", "--max-tokens", "4")
    else:
        args = ("winrate", "--engine", "transformers", "--model", tiny_random_policy, "--baseline", "reference",
                "--prompts", prompts, "--repeats", "1", "--max-tokens", "4", "--workspace", tmp_path / "ws")
    proc = cli(tmp_path, *args)
    assert_clear_error(proc, str(prompts), "row 2", "'long'", "--on-long-prompt skip")
    skipped = cli(tmp_path, *args, "--on-long-prompt", "skip")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    if command == "sample":
        reason = json.loads((tmp_path / "c.skipped.json").read_text())[0]["reason"]
        assert "tokens" in reason and "no candidates" not in reason
    else:
        assert "1 of 2 judgments failed" in skipped.stderr


def test_loop_offers_on_long_prompt(tmp_path):
    proc = cli(tmp_path, "loop", "--on-long-prompt", "ignore")
    assert_clear_error(proc, "--on-long-prompt", "ignore", code=2)


# ------------------------------------------------------------ 8 / (f): options checked before any work

BAD_OPTIONS = [
    ("--on-long-prompt", "ignore", "transformers"),
    ("--on-long-prompt", "ignore", "openai"),
    ("--shard-size", "0", "transformers"),
    ("--batch-size", "0", "transformers"),
    ("--n", "0", "transformers"),
    ("--n", "0", "openai"),
    ("--n", "-1", "transformers"),
    ("--temperature", "-1", "transformers"),
    ("--max-tokens", "0", "transformers"),
    ("--max-concurrency", "0", "openai"),
]


@pytest.mark.parametrize("flag, value, engine", BAD_OPTIONS, ids=[f"{f}={v}-{e}" for f, v, e in BAD_OPTIONS])
def test_bad_option_sample(tmp_path, server, prompts, flag, value, engine):
    out = good_parquet(tmp_path / "c.parquet")
    before = snapshot(out)
    model = ("fake", "--base-url", server) if engine == "openai" else (tmp_path / "no-model-needed",)
    proc = cli(tmp_path, "sample", "--engine", engine, "--model", *model, "--prompts", prompts, "--out", out,
               flag, value)
    assert_clear_error(proc, flag, value, code=2)
    assert_unchanged(before)
    assert not (tmp_path / "c.parquet.shards").exists() and FakeOpenAI.requests == 0


@pytest.mark.parametrize("args, flag", [
    (("judge", "--judge", "rules", "--in", "c.parquet", "--out", "o.parquet", "--concurrency", "0"), "--concurrency"),
    (("judge", "--judge", "rules", "--in", "c.parquet", "--out", "o.parquet", "--max-cost", "-1"), "--max-cost"),
    (("pairs", "--candidates", "c.parquet", "--scores", "s.parquet", "--out", "p.parquet", "--pairs-per-prompt", "0"),
     "--pairs-per-prompt"),
    (("winrate", "--model", "m", "--baseline", "reference", "--prompts", "p.jsonl", "--repeats", "0"), "--repeats"),
    (("winrate", "--model", "m", "--baseline", "reference", "--prompts", "p.jsonl", "--temperature", "-0.5"),
     "--temperature"),
    (("train", "dpo", "--model", "m", "--data", "d.parquet", "--batch-size", "0"), "--batch-size"),
    (("loop", "--n", "0"), "--n"),
    (("datasets", "refresh", "--shard-size", "0"), "--shard-size"),
])
def test_bad_option_other_commands(tmp_path, args, flag):
    proc = cli(tmp_path, *args)
    assert_clear_error(proc, flag, code=2)
    assert list(tmp_path.iterdir()) == []  # nothing written, no run directory


def _all_commands() -> list[tuple[str, ...]]:
    import argparse

    from prefwork.flows.cli import build_parser

    found = [()]

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append((*prefix, name))
                    walk(sub, (*prefix, name))
    walk(build_parser(), ())
    return found


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(c) or "prefwork")
def test_help_of_every_command(tmp_path, command):
    proc = cli(tmp_path, *command, "--help", timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


# ------------------------------------------------------------ 9 / (e): no empty result over a good file

def test_judge_on_no_candidates_keeps_the_existing_output(tmp_path):
    candidates({"a": ["x"]}).head(0).write_parquet(tmp_path / "c.parquet")
    out = good_parquet(tmp_path / "scores.parquet")
    before = snapshot(out)
    proc = cli(tmp_path, "judge", "--judge", "rules", "--in", tmp_path / "c.parquet", "--out", out)
    assert_clear_error(proc, str(out), "empty", "--allow-empty")
    assert_unchanged(before)
    ok = cli(tmp_path, "judge", "--judge", "rules", "--in", tmp_path / "c.parquet", "--out", out, "--allow-empty")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert pl.read_parquet(out).height == 0


def test_pairs_matching_no_candidate_keep_the_existing_output(tmp_path):
    candidates({"a": ["x", "y"]}).write_parquet(tmp_path / "c.parquet")
    scores({"zzz": [5.0, 1.0]}).write_parquet(tmp_path / "s.parquet")
    out = good_parquet(tmp_path / "pairs.parquet")
    before = snapshot(out)
    proc = cli(tmp_path, "pairs", "--candidates", tmp_path / "c.parquet", "--scores", tmp_path / "s.parquet",
               "--out", out)
    assert_clear_error(proc, str(out), "empty", "--allow-empty")
    assert_unchanged(before)


# ------------------------------------------------------------ 11: file modes, JSONL with a BOM

def test_output_modes_are_0644(tmp_path):
    candidates({"a": ["Tea is good", "Drink tea"]}, task="slogan", meta=SLOGAN).write_parquet(tmp_path / "c.parquet")
    proc = cli(tmp_path, "judge", "--judge", "rules", "--in", tmp_path / "c.parquet", "--out", tmp_path / "s.parquet",
               "--run-dir", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores({"a": [5.0, 1.0]}).write_parquet(tmp_path / "s2.parquet")
    proc = cli(tmp_path, "pairs", "--candidates", tmp_path / "c.parquet", "--scores", tmp_path / "s2.parquet",
               "--out", tmp_path / "p.parquet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for f in ("s.parquet", "p.parquet", "p.parquet.stats.json", "run/config.json", "run/provenance.json"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o644, f


def test_jsonl_with_a_bom_is_read(tmp_path, tiny_random_policy):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt_id": "a", "prompt": "Hi."}], bom=True)
    proc = cli(tmp_path, "sample", "--engine", "transformers", "--model", tiny_random_policy, "--prompts", prompts,
               "--out", tmp_path / "c.parquet", "--n", "1", "--max-tokens", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pl.read_parquet(tmp_path / "c.parquet")["prompt_id"].to_list() == ["a"]
    assert stat.S_IMODE((tmp_path / "c.parquet").stat().st_mode) == 0o644
    corpus = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "Hi.", "response": "Hello."}], bom=True)
    proc = cli(tmp_path, "train", "sft", "--model", tiny_random_policy, "--data", corpus, "--dry-run",
               "--out", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = write_jsonl(tmp_path / "audit.jsonl", [{"prompt": "1+1?", "a": "2", "b": "3", "label": "A"}], bom=True)
    from prefwork.evaluators.audit import load_pairs
    assert load_pairs(pairs)["prompt"].to_list() == ["1+1?"]
    from prefwork.pipeline.step_pairs import load_solutions
    sols = write_jsonl(tmp_path / "sol.jsonl", [{"prompt_id": "q", "text": "1. x"}], bom=True)
    assert load_solutions(sols)["prompt_id"].to_list() == ["q"]


@pytest.mark.slow
def test_an_error_inside_the_loops_flow_is_one_line(tmp_path, tiny_random_policy):
    """A failure inside the Prefect flow (here: a round with no preference pairs) prints the CLI's one
    error line, not Prefect's flow-run tracebacks (shown with --debug)."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Write a slogan for a bakery in exactly 3 words.", "task": "slogan", '
                       '"meta": {"words": 3, "keywords": ["bread"], "required": [], "forbidden": []}}\n')
    import os
    import subprocess
    import sys

    env = {k: v for k, v in {**os.environ, **ENV}.items() if k != "PREFECT_LOGGING_LEVEL"}  # the CLI's own default
    args = ["loop", "--policy", tiny_random_policy, "--workspace", tmp_path / "ws", "--train-prompts", prompts,
            "--eval-prompts", prompts, "--n", 1, "--eval-repeats", 1, "--rounds", 1, "--max-tokens", 4]
    run = [sys.executable, "-m", "prefwork.flows.cli", *map(str, args)]
    proc = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert_clear_error(proc, "round 1: 0 preference pairs", "--n")
