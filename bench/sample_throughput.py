"""Sampling throughput: bare ``LLM.generate`` vs our sampler (engine vllm) vs the transformers engine.

Why: the sampler adds chat-template rendering, tokenisation, seeds, shards and Parquet
writes around vLLM; this measures what that costs (target: b/a >= 0.9) and what vLLM
buys over the transformers fallback (b/c).

    python bench/sample_throughput.py            # >= 30 s of engine work per run, median of 3
    python bench/sample_throughput.py --smoke    # CI: fixed small workloads, seconds of engine work

(a) one ``LLM.generate`` call on pre-tokenised prompts with the same ``SamplingParams``
    the sampler builds (n, seed, temperature, top_p, max_tokens, stop); only the call is timed;
(b) ``pipeline.sample.sample`` with ``VLLMEngine`` wrapping the same ``LLM`` (everything timed:
    rendering, tokenising, shards, the final file);
(c) ``sample`` with ``TransformersEngine`` on the first prompts of the same list (it is
    much slower, so it gets its own count for the same seconds of work).
Workloads are sized by a short calibration run so each timed run does >= --seconds of work.
vLLM is built by ``VLLMEngine`` (so with its CPU defaults) and then called bare for (a).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_prompts(k: int):
    import polars as pl

    base = [json.loads(x)["prompt"] for x in (ROOT / "data" / "prompts" / "train.jsonl").read_text().splitlines() if x.strip()]
    rows = [{"prompt_id": f"b{i:06d}", "prompt": base[i % len(base)] + ("" if i < len(base) else f" (#{i})")}
            for i in range(k)]
    return pl.DataFrame(rows)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model directory (default: a random tiny policy built in a temp dir)")
    ap.add_argument("--smoke", action="store_true", help="CI mode: fixed small workloads (64 prompts x 4 for vLLM, "
                    "2 x 4 for transformers, 16 tokens), seconds of engine work")
    ap.add_argument("--seconds", type=float, default=30.0, help="engine work per timed run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the transformers engine")
    args = ap.parse_args()
    seconds = args.seconds
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from prefwork.pipeline.engines import TransformersEngine
    from prefwork.pipeline.engines_vllm import VLLMEngine
    from prefwork.pipeline.sample import SampleConfig, derive_seed, sample

    tmp = Path(tempfile.mkdtemp(prefix="prefwork-bench-"))
    model = args.model
    if not model:
        from prefwork.train.policy import build_random_policy

        lines = (ROOT / "data" / "corpus" / "sft.jsonl").read_text().splitlines()[:400]
        model = build_random_policy(tmp / "policy", [json.loads(x)["response"] for x in lines])
    cfg = SampleConfig(n=args.n, max_tokens=args.max_tokens, temperature=1.0, top_p=0.95, seed=0)
    if args.smoke:
        cfg = SampleConfig(n=4, max_tokens=16, temperature=1.0, top_p=0.95, seed=0, shard_size=32)
    t0 = time.perf_counter()
    llm = VLLMEngine(model, dtype="float32", max_model_len=256).llm  # our CPU defaults, then used bare
    print(f"vLLM engine loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    vllm_engine = VLLMEngine(model, llm=llm)
    hf_engine = TransformersEngine(model, threads=args.threads or None)

    def bare_inputs(prompts):
        """(a)'s inputs: exactly the requests the sampler sends, shard by shard, built untimed."""
        reqs = []
        for idx, start in enumerate(range(0, prompts.height, cfg.shard_size)):
            toks, params, _, _ = vllm_engine.requests(prompts["prompt"][start:start + cfg.shard_size].to_list(),
                                                      cfg, derive_seed(cfg.seed, idx))
            reqs.append((toks, params))
        flat = [x for t, _ in reqs for x in t], [p for _, p in reqs for p in p]
        return flat

    def run_a(prompts):
        toks, params = bare_inputs(prompts)
        return timed(lambda: llm.generate(toks, params, use_tqdm=False))

    counter = iter(range(10**6))

    def run_sampler(engine, prompts):
        return timed(lambda: sample(prompts, engine, tmp / f"out{next(counter)}.parquet", cfg, "bench"))

    def size(run, per_call: int, start: int) -> int:
        """Prompt count whose run takes about ``seconds`` (one calibration run, 20 % margin)."""
        k = start
        while True:
            dt = run(make_prompts(k))
            if dt >= 1.0 or k >= 10**5:
                return max(per_call, int(k * 1.2 * seconds / dt))
            k *= 4

    if args.smoke:  # fixed, small workloads: no calibration, a few seconds of engine work in all
        k_v, k_t = 64, 2
    else:
        k_v = size(run_a, cfg.shard_size, 64)
        k_t = size(lambda p: run_sampler(hf_engine, p), 1, 4)
    results = {}
    for label, k, run in (("a bare LLM.generate", k_v, run_a),
                          ("b sampler, engine vllm", k_v, lambda p: run_sampler(vllm_engine, p)),
                          ("c sampler, engine transformers", k_t, lambda p: run_sampler(hf_engine, p))):
        prompts = make_prompts(k)
        times = [run(prompts) for _ in range(args.runs)]
        rate = k * cfg.n / statistics.median(times)
        results[label] = rate
        print(f"{label:32s} {k:6d} prompts x {cfg.n}  runs {', '.join(f'{t:.1f}s' for t in times)}  "
              f"median {rate:8.1f} samples/s", flush=True)
    a, b, c = results.values()
    print(f"b/a = {b / a:.3f} (target >= 0.9)   b/c = {b / c:.1f}x"
          f"{'   [smoke: short runs, ratios are noisy]' if args.smoke else ''}")


if __name__ == "__main__":
    main()
