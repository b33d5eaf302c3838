"""Sampling throughput: bare ``LLM.generate`` vs our sampler (engine vllm) vs the transformers engine.

Why: the sampler adds chat-template rendering, tokenisation, seeds, shards and Parquet
writes around vLLM; this measures what that costs (target: b/a >= 0.9) and what vLLM
buys over the transformers fallback (b/c), in new tokens/s with each engine's start-up
reported apart, and projects a loop stage (``--stage``, start-up included) for both engines.

    python bench/sample_throughput.py            # tiny policy: >= 30 s of engine work per run, median of 3
    python bench/sample_throughput.py --smoke    # CI: fixed small workloads, seconds of engine work
    python bench/sample_throughput.py --model smollm2-135m-instruct   # a real model: 16 prompts x 8, 64 tokens
    python bench/sample_throughput.py --model smollm2-135m-instruct --smoke   # 2 x 2, 16 tokens (start-up bound)

``--model`` takes any model reference (``pipeline.models.resolve_model``: a folder, a .gguf,
an alias, a Hub id). vLLM runs in float32 on CPU (bf16 is emulated on AVX2-only CPUs).
(a) one ``LLM.generate`` call on pre-tokenised prompts with the same ``SamplingParams``
    the sampler builds (n, seed, temperature, top_p, max_tokens, stop); only the call is timed;
(b) ``pipeline.sample.sample`` with ``VLLMEngine`` wrapping the same ``LLM`` (everything timed:
    rendering, tokenising, shards, the final file);
(c) ``sample`` with ``TransformersEngine``: on the tiny policy on the first prompts of the same
    list (it is much slower there, so it gets its own count for the same seconds of work).
Tiny policy: workloads are sized by a short calibration run so each timed run does >= --seconds
of work. ``--prompts``, and a real model, use fixed sizes instead. vLLM is built by
``VLLMEngine`` (so with its CPU defaults) and then called bare for (a).
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


def new_tokens(outputs) -> int:
    """New tokens of bare vLLM outputs (every candidate of every prompt)."""
    return sum(len(c.token_ids) for o in outputs for c in o.outputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model reference: folder, .gguf, alias (smollm2-135m-instruct) or Hub id "
                    "(default: a random tiny policy built in a temp dir)")
    ap.add_argument("--smoke", action="store_true", help="CI mode: fixed small workloads (tiny policy: 64 prompts x 4 "
                    "for vLLM, 2 x 4 for transformers, 16 tokens; --model: 2 x 2), seconds of engine work")
    ap.add_argument("--seconds", type=float, default=30.0, help="engine work per timed run (tiny policy, calibrated)")
    ap.add_argument("--prompts", type=int, help="fixed prompt count for every engine, no calibration "
                    "(default with --model: 16)")
    ap.add_argument("--runs", type=int, help="timed runs per variant (default 3; with --model 2)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, help="new tokens per answer at most (default 48; with --model 64)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the transformers engine")
    ap.add_argument("--stage", default="64x8", help="loop stage PROMPTSxN to project, start-up included")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    real = bool(args.model)
    runs = args.runs or (2 if real else 3)
    max_tokens = args.max_tokens or (64 if real else 48)
    seconds = args.seconds
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # the engine's internal queues stay on loopback
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load0 = os.getloadavg()

    from prefwork.pipeline.engines import TransformersEngine
    from prefwork.pipeline.engines_vllm import VLLMEngine
    from prefwork.pipeline.sample import SampleConfig, derive_seed, sample

    tmp = Path(tempfile.mkdtemp(prefix="prefwork-bench-"))
    if real:
        from prefwork.pipeline.models import describe_model, model_label, resolve_model

        model = resolve_model(args.model, ROOT / "runs" / ".cache")
        info = describe_model(model)
        label = f"{model_label(args.model)} ({info['parameters'] / 1e6:.1f}M parameters)"
    else:
        from prefwork.train.policy import build_random_policy

        lines = (ROOT / "data" / "corpus" / "sft.jsonl").read_text().splitlines()[:400]
        model = build_random_policy(tmp / "policy", [json.loads(x)["response"] for x in lines])
        label = "tiny random policy"
    cfg = SampleConfig(n=args.n, max_tokens=max_tokens, temperature=1.0, top_p=0.95, seed=0)
    if args.smoke:
        cfg = SampleConfig(n=2 if real else 4, max_tokens=16, temperature=1.0, top_p=0.95, seed=0, shard_size=32)
    t0 = time.perf_counter()
    llm = VLLMEngine(model, dtype="float32", max_model_len=512 if real else 256).llm  # our CPU defaults, then bare
    start_vllm = time.perf_counter() - t0
    print(f"vLLM engine started in {start_vllm:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    vllm_engine = VLLMEngine(model, llm=llm)
    t0 = time.perf_counter()
    hf_engine = TransformersEngine(model, threads=args.threads or None)
    start_hf = time.perf_counter() - t0
    print(f"transformers engine started in {start_hf:.1f} s", flush=True)

    def bare_inputs(prompts):
        """(a)'s inputs: exactly the requests the sampler sends, shard by shard, built untimed."""
        reqs = []
        for idx, start in enumerate(range(0, prompts.height, cfg.shard_size)):
            toks, params, _, _ = vllm_engine.requests(prompts["prompt"][start:start + cfg.shard_size].to_list(),
                                                      cfg, derive_seed(cfg.seed, idx))
            reqs.append((toks, params))
        flat = [x for t, _ in reqs for x in t], [p for _, p in reqs for p in p]
        return flat

    def run_a(prompts) -> tuple[float, int]:
        toks, params = bare_inputs(prompts)
        t = time.perf_counter()
        outputs = llm.generate(toks, params, use_tqdm=False)
        return time.perf_counter() - t, new_tokens(outputs)

    counter = iter(range(10**6))

    def run_sampler(engine, prompts) -> tuple[float, int]:
        import polars as pl

        out = tmp / f"out{next(counter)}.parquet"
        dt = timed(lambda: sample(prompts, engine, out, cfg, "bench"))
        return dt, int(pl.read_parquet(out)["num_tokens"].sum())

    def size(run, per_call: int, start: int) -> int:
        """Prompt count whose run takes about ``seconds`` (one calibration run, 20 % margin)."""
        k = start
        while True:
            dt, _ = run(make_prompts(k))
            if dt >= 1.0 or k >= 10**5:
                return max(per_call, int(k * 1.2 * seconds / dt))
            k *= 4

    if args.smoke:  # fixed, small workloads: no calibration, a few seconds of engine work in all
        k_v, k_t = (2, 2) if real else (64, 2)
    elif args.prompts or real:
        k_v = k_t = args.prompts or 16
        warm = make_prompts(1)  # one short untimed call per engine: first-call costs stay out of the runs
        run_a(warm), run_sampler(hf_engine, warm)
    else:
        k_v = size(run_a, cfg.shard_size, 64)
        k_t = size(lambda p: run_sampler(hf_engine, p), 1, 4)
    results = {}
    for key, name, k, run in (("a", "a bare LLM.generate", k_v, run_a),
                              ("b", "b sampler, engine vllm", k_v, lambda p: run_sampler(vllm_engine, p)),
                              ("c", "c sampler, engine transformers", k_t, lambda p: run_sampler(hf_engine, p))):
        prompts = make_prompts(k)
        measured = []
        for _ in range(runs):
            dt, tokens = run(prompts)
            measured.append({"seconds": dt, "new_tokens": tokens, "load_1min": os.getloadavg()[0]})
        med_s = statistics.median(m["seconds"] for m in measured)
        tok_s = statistics.median(m["new_tokens"] / m["seconds"] for m in measured)
        results[key] = {"name": name, "prompts": k, "n": cfg.n, "runs": measured, "samples_per_s": k * cfg.n / med_s,
                        "tokens_per_s": tok_s,
                        "tokens_per_answer": statistics.mean(m["new_tokens"] for m in measured) / (k * cfg.n)}
        r = results[key]
        times = ", ".join(f"{m['seconds']:.1f}s" for m in measured)
        print(f"{name:32s} {k:6d} prompts x {cfg.n}  runs {times}  "
              f"median {r['samples_per_s']:8.1f} samples/s  {tok_s:8.1f} new tokens/s "
              f"({r['tokens_per_answer']:.1f} tokens/answer)  load {measured[-1]['load_1min']:.1f}", flush=True)
    a, b, c = (results[k]["samples_per_s"] for k in "abc")
    print(f"b/a = {b / a:.3f} (target >= 0.9)   b/c = {b / c:.1f}x  (samples/s; new tokens/s: b/a "
          f"{results['b']['tokens_per_s'] / results['a']['tokens_per_s']:.3f}, b/c "
          f"{results['b']['tokens_per_s'] / results['c']['tokens_per_s']:.2f}x)"
          f"{'   [smoke: short runs, ratios are noisy]' if args.smoke else ''}")
    stage_p, stage_n = (int(x) for x in args.stage.lower().split("x"))
    answers = stage_p * stage_n
    project = {"vllm": start_vllm + answers / b, "transformers": start_hf + answers / c}
    steady = {"vllm": answers / b, "transformers": answers / c}
    print(f"{label}: start-up vLLM {start_vllm:.1f} s, transformers {start_hf:.1f} s; a stage of {stage_p} prompts x "
          f"{stage_n} = {answers} answers at the measured rates: vLLM {steady['vllm']:.0f} s + start-up = "
          f"{project['vllm']:.0f} s, transformers {steady['transformers']:.0f} s + start-up = {project['transformers']:.0f} s "
          f"-> faster: steady state {min(steady, key=steady.get)}, with start-up {min(project, key=project.get)}")
    load1 = os.getloadavg()
    print(f"load average at start {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, at end {load1[0]:.1f}/{load1[1]:.1f}/"
          f"{load1[2]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": label, "config": {"n": cfg.n, "max_tokens": cfg.max_tokens, "runs": runs},
            "startup_s": {"vllm": start_vllm, "transformers": start_hf}, "results": results,
            "stage": {"prompts": stage_p, "n": stage_n, "projected_s": project, "steady_s": steady},
            "load_avg": {"start": load0, "end": load1}}, indent=2))


if __name__ == "__main__":
    main()
