"""Throughput of the LLM judge against a real local vLLM OpenAI-compatible server.

Three ways to send the same requests (fixed prompt length, fixed ``max_tokens``, the same
structured-output choice), in requests/s:

- ``sequential``: a bare loop of synchronous ``OpenAI`` client calls, one at a time;
- ``bare_async``: ``AsyncOpenAI`` + a semaphore of ``--concurrency`` + ``asyncio.gather``;
- ``prefwork``: ``JudgeSession.score`` (template, semaphore, retries, usage, a fresh SQLite cache
  written per answer, a SCORES table) at the same concurrency.

Targets (issue 5): prefwork >= 5x sequential, prefwork >= 0.9x bare_async.

Without ``--base-url`` the bench builds the tiny random policy and starts its own server, pinned with
``taskset`` to core 0 (``OMP_NUM_THREADS=1``) while the client is pinned to core 1, so the two do not
fight over the cores; the server is stopped at exit. With ``--base-url`` (and ``--model``) it uses that
server (the test suite passes its shared one). ``--smoke`` is the CI size (well under a minute).

    python bench/judge_throughput.py                 # full run, own server
    python bench/judge_throughput.py --smoke --base-url http://127.0.0.1:8000/v1 --model NAME
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("apple river stone cloud green music light table water paper garden winter summer market "
         "silver window morning story bridge forest candle orange yellow letter number school").split()


def make_prompts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + " Grade:" for _ in range(n)]


def request_kwargs(model: str, max_tokens: int) -> dict:
    return {"model": model, "temperature": 0.0, "max_tokens": max_tokens,
            "extra_body": {"structured_outputs": {"choice": ["1", "2", "3", "4", "5"]}}}


def run_sequential(base_url: str, model: str, prompts: list[str], max_tokens: int) -> float:
    from openai import OpenAI
    client = OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    kw = request_kwargs(model, max_tokens)
    t0 = time.perf_counter()
    for p in prompts:
        client.chat.completions.create(messages=[{"role": "user", "content": p}], **kw)
    dt = time.perf_counter() - t0
    client.close()
    return len(prompts) / dt


def run_bare_async(base_url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int) -> float:
    from openai import AsyncOpenAI

    async def go():
        t0 = time.perf_counter()
        client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
        sem = asyncio.Semaphore(concurrency)
        kw = request_kwargs(model, max_tokens)

        async def one(p):
            async with sem:
                r = await client.chat.completions.create(messages=[{"role": "user", "content": p}], **kw)
                return r.choices[0].message.content
        await asyncio.gather(*(one(p) for p in prompts))
        await client.close()
        return len(prompts) / (time.perf_counter() - t0)
    return asyncio.run(go())


def run_prefwork(base_url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int,
                 workdir: Path) -> float:
    import polars as pl

    from prefwork.evaluators.llm_client import ClientOptions
    from prefwork.evaluators.session import JudgeSession

    judge_dir = workdir / "bench_judge"
    judge_dir.mkdir(parents=True, exist_ok=True)
    (judge_dir / "config.yaml").write_text(
        f"kind: rubric\nmodel: {json.dumps(model)}\ntemperature: 0\nmax_tokens: {max_tokens}\n"
        "template: '{{answer}}'\nscore_range: [1, 5]\nstructured: vllm\n")
    cands = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(len(prompts))], "prompt": ["bench"] * len(prompts),
                          "candidate_id": [0] * len(prompts), "text": prompts})
    db = workdir / f"cache-{time.time_ns()}.sqlite"
    t0 = time.perf_counter()
    with JudgeSession(ClientOptions(base_url=base_url, concurrency=concurrency), cache=db) as s:
        out = s.score(str(judge_dir), cands)
    dt = time.perf_counter() - t0
    errors = out["error"].drop_nulls().to_list()
    if errors:
        raise RuntimeError(f"{len(errors)} judge errors, e.g. {errors[0]}")
    return len(prompts) / dt


def start_server(workdir: Path, extra_args: tuple[str, ...] = ()):
    """Build the tiny random policy and start vLLM on it (``pipeline.serve``), pinned to core 0.
    Returns (server, base_url, model)."""
    import shutil

    from prefwork.pipeline.serve import ServeConfig, VLLMServer
    from prefwork.train.policy import build_random_policy

    lines = (ROOT / "data" / "corpus" / "sft.jsonl").read_text().splitlines()[:400]
    texts = [json.loads(x)["prompt"] for x in lines] + [json.loads(x)["response"] for x in lines]
    model_dir = build_random_policy(workdir / "model", texts)
    prefix = ("taskset", "-c", "0") if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else ()
    server = VLLMServer.start(model_dir, ServeConfig(max_model_len=256, startup_timeout=600),
                              log_path=workdir / "server.log", prefix=prefix,
                              extra_args=("--disable-log-stats", "--no-enable-prefix-caching", *extra_args),
                              env={"OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "WARNING"})
    return server, server.base_url, server.model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=None, help="use this server instead of starting one")
    ap.add_argument("--model", default=None, help="served model name (with --base-url)")
    ap.add_argument("--smoke", action="store_true", help="CI size: few requests, one round")
    ap.add_argument("--requests", type=int, default=None, help="requests per async measurement")
    ap.add_argument("--sequential-requests", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds of the async modes (median kept)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=24, help="fixed prompt length (words from a fixed list)")
    ap.add_argument("--max-tokens", type=int, default=2)
    ap.add_argument("--server-args", default="", help="extra vLLM server options for the bench's own server, "
                    "e.g. '--enforce-eager' (quote them as one string)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    n = args.requests or (96 if args.smoke else 512)
    n_seq = args.sequential_requests or (16 if args.smoke else 64)
    rounds = args.rounds or (1 if args.smoke else 3)

    workdir = Path(tempfile.mkdtemp(prefix="judge_bench_"))
    server = None
    try:
        if args.base_url:
            base_url, model = args.base_url, args.model
            if not model:
                from openai import OpenAI
                model = OpenAI(base_url=base_url, api_key="EMPTY").models.list().data[0].id
        else:
            server, base_url, model = start_server(workdir, tuple(shlex.split(args.server_args)))
        if server is not None and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {1})  # the client on the other core
        run_bare_async(base_url, model, make_prompts(32, args.prompt_words, 99), args.max_tokens, args.concurrency)
        seq = run_sequential(base_url, model, make_prompts(n_seq, args.prompt_words, 1), args.max_tokens)
        bare, ours = [], []
        for r in range(rounds):
            order = [("bare", run_bare_async), ("ours", run_prefwork)] if r % 2 == 0 else \
                    [("ours", run_prefwork), ("bare", run_bare_async)]
            for name, fn in order:
                prompts = make_prompts(n, args.prompt_words, 1000 * (r + 1) + (name == "ours"))
                extra = (workdir,) if name == "ours" else ()
                (ours if name == "ours" else bare).append(
                    fn(base_url, model, prompts, args.max_tokens, args.concurrency, *extra))
        result = {
            "requests": n, "sequential_requests": n_seq, "rounds": rounds, "concurrency": args.concurrency,
            "prompt_words": args.prompt_words, "max_tokens": args.max_tokens, "own_server": server is not None,
            "rps": {"sequential": seq, "bare_async": statistics.median(bare), "prefwork": statistics.median(ours)},
            "rounds_rps": {"bare_async": bare, "prefwork": ours},
        }
        result["vs_sequential"] = result["rps"]["prefwork"] / seq
        result["vs_bare_async"] = result["rps"]["prefwork"] / result["rps"]["bare_async"]
        result["targets"] = {"vs_sequential>=5": result["vs_sequential"] >= 5,
                             "vs_bare_async>=0.9": result["vs_bare_async"] >= 0.9}
    finally:
        if server is not None:
            server.stop()
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"judge throughput (concurrency {args.concurrency}, {args.prompt_words}-word prompts, "
                    f"max_tokens {args.max_tokens})")
    t.add_column("mode")
    t.add_column("requests/s", justify="right")
    t.add_column("prefwork vs mode", justify="right")
    for mode, rps in result["rps"].items():
        t.add_row(mode, f"{rps:.1f}", f"{result['rps']['prefwork'] / rps:.2f}x")
    Console().print(t)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
