"""Peak memory and throughput of LoRA DPO vs full-weight DPO, our trainer both times, side by side.

Same model (SmolLM2-135M-Instruct, float32), same pairs (from the shipped SFT corpus, short enough
that nothing is truncated), same batch, max length, optimizer (adamw_torch), one epoch; the only
difference is ``peft`` (none vs lora: r 16, alpha 32, every linear layer but the LM head). Runs
alternate (full, lora, lora, full, ...) in one invocation; each is its own subprocess, so its peak RSS
is the kernel's rusage of that child (``os.wait4``). A run is timed from the call of ``train_dpo``
(tokenisation, reference pass, training, saving; LoRA also merges) to its return. Besides the ratios
it prints what the memory is made of: weights, gradients and AdamW moments (from the parameter
counts), and the largest per-step logits tensor (scored positions x vocabulary x 4 bytes; the
log-softmax and its gradient are two more of that size).

    python bench/lora_memory.py            # SmolLM2-135M-Instruct, 64 pairs, 2 runs each (minutes)
    python bench/lora_memory.py --smoke    # a tiny random Llama, seconds (CI)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL = dict(pairs=64, batch_size=8, max_length=128, repeats=2, learning_rate=1e-5, lora_learning_rate=1e-4)
SMOKE = dict(pairs=16, batch_size=8, max_length=64, repeats=1, learning_rate=1e-3, lora_learning_rate=1e-2)
MB = 2 ** 20


def make_model(work: Path, smoke: bool, cache: Path) -> Path:
    """SmolLM2-135M-Instruct as a local folder (converted once into ``cache``), or a tiny random Llama."""
    if not smoke:
        from prefwork.pipeline.models import resolve_model
        return resolve_model("smollm2-135m-instruct", cache)
    from prefwork.train.policy import PolicyConfig, build_random_policy
    records = _records()
    return build_random_policy(work / "model", [r["prompt"] for r in records] + [r["response"] for r in records],
                               PolicyConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                                            intermediate_size=64))


def _records() -> list[dict]:
    lines = (ROOT / "data" / "corpus" / "sft.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def make_pairs(model: Path, work: Path, p: dict) -> Path:
    """``p['pairs']`` pairs (a prompt, its response, another prompt's response) that fit max_length."""
    import random

    import polars as pl
    from transformers import AutoTokenizer

    from prefwork.train.logps import encode_pair

    records, tok, rng, rows = _records(), AutoTokenizer.from_pretrained(model), random.Random(0), []
    while len(rows) < p["pairs"]:
        a, b = rng.choice(records), rng.choice(records)
        enc = encode_pair(tok, a["prompt"], a["response"], b["response"], 10**6)
        if len(enc["prompt_ids"]) + max(len(enc["chosen_ids"]), len(enc["rejected_ids"])) > p["max_length"]:
            continue
        rows.append({"prompt_id": f"p{len(rows)}", "prompt": a["prompt"], "chosen": a["response"],
                     "rejected": b["response"], "chosen_id": 0, "rejected_id": 1, "chosen_score": 5.0,
                     "rejected_score": 1.0, "margin": 4.0})
    pl.DataFrame(rows).write_parquet(work / "pairs.parquet")
    return work / "pairs.parquet"


def run(kind: str, model: Path, pairs: Path, out: Path, p: dict) -> dict:
    """One training run (in the worker process): its time, losses and what its memory is made of."""
    import polars as pl
    import torch
    from transformers import AutoConfig, AutoTokenizer

    import prefwork.train.dpo as dpo
    from prefwork.pipeline.run import read_metrics
    from prefwork.train.logps import encode_pairs
    from prefwork.train.shared_prompt import IGNORE, SharedPromptCollator

    lora = kind == "lora"
    cfg = dpo.DPOConfig(loss="dpo", beta=0.1, learning_rate=p["lora_learning_rate" if lora else "learning_rate"],
                        epochs=1.0, batch_size=p["batch_size"], grad_accum=1, max_length=p["max_length"], seed=0,
                        optim="adamw_torch", lr_scheduler_type="constant", logging_steps=1, save_steps=10**9,
                        eval_fraction=0.0, peft="lora" if lora else "none",
                        gradient_checkpointing=p.get("gradient_checkpointing", False))
    trainable = {}
    build = dpo.PreferenceTrainer.__init__

    def counting_init(self, *a, **k):  # the parameter counts of the model the trainer gets
        build(self, *a, **k)
        params = list(self.model.parameters())
        trainable.update(total=sum(x.numel() for x in params),
                         trainable=sum(x.numel() for x in params if x.requires_grad))
    dpo.PreferenceTrainer.__init__ = counting_init
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports and torch's start-up
    t0 = time.perf_counter()
    dpo.train_dpo(model, pl.read_parquet(pairs), out, cfg)
    elapsed = time.perf_counter() - t0
    tok, vocab = AutoTokenizer.from_pretrained(model), AutoConfig.from_pretrained(model).vocab_size
    examples = encode_pairs(tok, pl.read_parquet(pairs).iter_rows(named=True), p["max_length"])
    collate, positions = SharedPromptCollator(tok.pad_token_id), 0
    for i in range(0, len(examples), p["batch_size"]):  # largest batch's scored positions (all its rows)
        b = collate(examples[i:i + p["batch_size"]])
        scored = (b["chosen_targets"] != IGNORE) | (b["rejected_targets"] != IGNORE)
        positions = max(positions, b["input_ids"].shape[0] * int(scored.any(0).sum()))
    return {"elapsed_s": elapsed, "losses": [m["loss"] for m in read_metrics(out)], "startup_rss_mb": before,
            "logits_mb": positions * vocab * 4 / MB, "vocab": vocab, **trainable, "threads": torch.get_num_threads()}


def spawn(kind: str, model: Path, pairs: Path, work: Path, p: dict, threads: int, i: int) -> dict:
    """One run in a fresh subprocess; its peak RSS comes from the kernel's rusage of that child."""
    out, result = work / f"{kind}-{i}", work / f"{kind}-{i}.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--model", str(model), "--pairs-file", str(pairs),
           "--out", str(out), "--params", json.dumps(p), "--result", str(result), "--threads", str(threads)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{kind} run failed:\n{''.join(tail)}")
    r = json.loads(result.read_text())
    r.update(kind=kind, peak_rss_mb=usage.ru_maxrss / 1024, samples_per_s=p["pairs"] / r["elapsed_s"])
    return r


def report(runs: list[dict], p: dict, load: tuple, model_name: str, threads: int) -> None:
    med = {k: {key: statistics.median(r[key] for r in runs if r["kind"] == k)
               for key in ("samples_per_s", "elapsed_s", "peak_rss_mb", "startup_rss_mb")} for k in ("full", "lora")}
    one = {k: next(r for r in runs if r["kind"] == k) for k in ("full", "lora")}
    print(f"DPO on {model_name}, {p['pairs']} pairs, batch {p['batch_size']}, max_length {p['max_length']}, fp32, "
          f"{threads} threads{', gradient checkpointing' if p['gradient_checkpointing'] else ''}; "
          f"median of {p['repeats']} runs each")
    print(f"{'':6s} {'pairs/s':>8s} {'time s':>7s} {'peak RSS MB':>12s} {'at start MB':>12s} "
          f"{'trainable':>12s} {'first loss':>10s} {'last loss':>10s}")
    for k in ("full", "lora"):
        m, r = med[k], one[k]
        print(f"{k:6s} {m['samples_per_s']:8.2f} {m['elapsed_s']:7.1f} {m['peak_rss_mb']:12.0f} {m['startup_rss_mb']:12.0f} "
              f"{r['trainable']:12,d} {r['losses'][0]:10.4f} {r['losses'][-1]:10.4f}")
    weights = one["full"]["total"] * 4 / MB
    print(f"memory parts (computed): weights {weights:.0f} MB; full fine-tuning adds gradients {weights:.0f} MB and "
          f"AdamW moments {2 * weights:.0f} MB; LoRA adds {one['lora']['trainable'] * 4 * 3 / MB:.0f} MB for its "
          f"adapters' gradients and moments ({one['lora']['trainable'] * 4 / MB:.0f} MB of adapter weights); the "
          f"largest step's logits {one['full']['logits_mb']:.0f} MB (x3 with log-softmax and gradient; vocabulary "
          f"{one['full']['vocab']:,d})")
    rss = med["lora"]["peak_rss_mb"] / med["full"]["peak_rss_mb"]
    above = (med["lora"]["peak_rss_mb"] - med["lora"]["startup_rss_mb"]) / \
        (med["full"]["peak_rss_mb"] - med["full"]["startup_rss_mb"])
    print(f"peak RSS ratio LoRA/full: {rss:.2f} (target <= 0.6); above the start-up RSS: {above:.2f}; "
          f"throughput ratio LoRA/full: {med['lora']['samples_per_s'] / med['full']['samples_per_s']:.2f}x; "
          f"load average at start: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} CPUs")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # one measured run, started by spawn()
        wp = argparse.ArgumentParser()
        for name in ("--worker", "--model", "--pairs-file", "--out", "--params", "--result", "--threads"):
            wp.add_argument(name, required=True)
        w = wp.parse_args(argv)
        import torch
        torch.set_num_threads(int(w.threads))
        r = run(w.worker, Path(w.model), Path(w.pairs_file), Path(w.out), json.loads(w.params))
        Path(w.result).write_text(json.dumps(r))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny random Llama and 16 pairs, for CI")
    ap.add_argument("--repeats", type=int, help="runs of each kind, alternating (default 2; smoke 1)")
    ap.add_argument("--pairs", type=int, help="number of pairs (default 64; smoke 16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--cache", default=str(ROOT / "runs" / ".cache"), help="where SmolLM2's converted folder is kept")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="both kinds with gradient checkpointing (activations: one layer's at a time)")
    ap.add_argument("--json", help="also write the runs here")
    args = ap.parse_args(argv)
    p = dict(SMOKE if args.smoke else FULL)
    p["repeats"], p["pairs"] = args.repeats or p["repeats"], args.pairs or p["pairs"]
    p["gradient_checkpointing"] = args.gradient_checkpointing
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lora_bench_") as tmp:
        work = Path(tmp)
        model = make_model(work, args.smoke, Path(args.cache))
        pairs, runs = make_pairs(model, work, p), []
        for i in range(p["repeats"]):
            for kind in (("full", "lora") if i % 2 == 0 else ("lora", "full")):
                runs.append(spawn(kind, model, pairs, work, p, args.threads, i))
                r = runs[-1]
                print(f"  run {len(runs)}: {kind:4s} {r['elapsed_s']:7.1f} s  {r['samples_per_s']:6.2f} pairs/s  "
                      f"peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
    report(runs, p, load, "a tiny random Llama" if args.smoke else "SmolLM2-135M-Instruct", args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps({"params": p, "load_avg": load, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
