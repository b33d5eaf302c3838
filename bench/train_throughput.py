"""Training throughput: our PreferenceTrainer (reference pass included) vs TRL's DPOTrainer.

Same small Llama (``build_random_policy`` + ``PolicyConfig``), same synthetic pairs (short
enough that nothing is truncated), same batch size, max length, optimizer (adamw_torch),
constant learning rate, fp32, no gradient checkpointing, one epoch, logging every step.
Runs alternate (ours, trl, ours, trl, ...) in one invocation; each run is its own
subprocess so its peak RSS is read from outside (``os.wait4``). Ours is timed from the
call of ``train_dpo`` (tokenisation, reference pass, training, saving) to its return;
TRL's from building ``DPOTrainer`` (tokenisation, reference model load) through training
and saving. Equal first-step loss and final losses within 1% make the comparison valid.

    python bench/train_throughput.py            # 1,024 pairs, 4 layers x 256 hidden (minutes)
    python bench/train_throughput.py --smoke    # tiny sizes, well under a minute (CI)
    python bench/train_throughput.py --model smollm2-135m-instruct   # a real model (32 pairs, minutes)
    python bench/train_throughput.py --model smollm2-135m-instruct --smoke   # 4 pairs, 2 steps

``--model`` takes any model reference (``pipeline.models.resolve_model``: a folder, a .gguf
file, an alias, a Hub id; GGUFs are converted once under runs/.cache/models). Its pairs come
from the same corpus, tokenised with that model's tokenizer and chat template.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL = dict(pairs=1024, layers=4, hidden=256, heads=4, intermediate=1024, vocab=2048, batch_size=8, max_length=128,
            learning_rate=1e-4, repeats=2)
SMOKE = dict(pairs=48, layers=1, hidden=32, heads=2, intermediate=64, vocab=300, batch_size=8, max_length=64,
             learning_rate=1e-3, repeats=1)
# a real (pretrained) model given by --model: fewer pairs, a small learning rate
MODEL = dict(pairs=32, batch_size=8, max_length=192, learning_rate=1e-6, repeats=2)
MODEL_SMOKE = dict(pairs=4, batch_size=2, max_length=96, learning_rate=1e-6, repeats=1)
CACHE_ROOT = ROOT / "runs" / ".cache"  # converted GGUFs, shared with the CLI (pipeline.models)


def make_inputs(work: Path, p: dict, model: Path | None = None) -> tuple[Path, Path]:
    """The model (``model``, or a tiny random policy built here) and ``p['pairs']`` pairs (from the
    shipped SFT corpus, tokenised by that model) that fit max_length untruncated."""
    import random

    import polars as pl
    from transformers import AutoTokenizer

    from prefwork.train.logps import encode_pair
    from prefwork.train.policy import PolicyConfig, build_random_policy

    records = [json.loads(x) for x in (ROOT / "data" / "corpus" / "sft.jsonl").read_text().splitlines() if x.strip()]
    texts = [r["prompt"] for r in records] + [r["response"] for r in records]
    if model is None:
        model = build_random_policy(work / "model", texts, PolicyConfig(
            vocab_size=p["vocab"], hidden_size=p["hidden"], num_layers=p["layers"], num_heads=p["heads"],
            intermediate_size=p["intermediate"], max_position=max(256, p["max_length"])))
    tok = AutoTokenizer.from_pretrained(model)
    rng = random.Random(0)
    rows = []
    while len(rows) < p["pairs"]:
        a, b = rng.choice(records), rng.choice(records)
        enc = encode_pair(tok, a["prompt"], a["response"], b["response"], 10**6)
        if len(enc["prompt_ids"]) + max(len(enc["chosen_ids"]), len(enc["rejected_ids"])) > p["max_length"]:
            continue
        i = len(rows)
        rows.append({"prompt_id": f"p{i}", "prompt": a["prompt"], "chosen": a["response"], "rejected": b["response"],
                     "chosen_id": 0, "rejected_id": 1, "chosen_score": 5.0, "rejected_score": 1.0, "margin": 4.0})
    pairs = work / "pairs.parquet"
    pl.DataFrame(rows).write_parquet(pairs)
    return model, pairs


def run_ours(model: Path, pairs: Path, out: Path, p: dict, share_prompt: bool = True) -> dict:
    import polars as pl

    import prefwork.train.dpo as dpo
    from prefwork.pipeline.run import read_metrics

    timing = {}
    attach = dpo.attach_reference

    def timed_attach(*a, **k):  # how much of our time the one-off reference pass takes
        t = time.perf_counter()
        try:
            return attach(*a, **k)
        finally:
            timing["reference_s"] = time.perf_counter() - t
    dpo.attach_reference = timed_attach
    cfg = dpo.DPOConfig(loss="dpo", beta=0.1, learning_rate=p["learning_rate"], epochs=1.0, batch_size=p["batch_size"],
                        grad_accum=1, max_length=p["max_length"], seed=0, optim="adamw_torch",
                        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, logging_steps=1,
                        save_steps=10**9, eval_fraction=0.0, share_prompt=share_prompt)
    data = pl.read_parquet(pairs)
    t0 = time.perf_counter()
    dpo.train_dpo(model, data, out, cfg)
    elapsed = time.perf_counter() - t0
    losses = [m["loss"] for m in read_metrics(out)]
    return {"elapsed_s": elapsed, "losses": losses, **timing}


def run_trl(model: Path, pairs: Path, out: Path, p: dict) -> dict:
    import datasets
    import polars as pl
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rows = [{"prompt": tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                               tokenize=False), "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in pl.read_parquet(pairs).iter_rows(named=True)]
    args = trl.DPOConfig(
        output_dir=str(out), per_device_train_batch_size=p["batch_size"], gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=p["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", max_grad_norm=1.0, weight_decay=0.0, beta=0.1, loss_type=["sigmoid"],
        max_length=p["max_length"], bf16=False, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
        seed=0, data_seed=0, report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
    )
    t0 = time.perf_counter()
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                             ref_model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                             args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    setup = time.perf_counter() - t0
    trainer.train()
    trainer.save_model(str(out / "final"))
    elapsed = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"elapsed_s": elapsed, "losses": losses, "setup_s": setup}


def worker(which: str, model: str, pairs: str, out: str, params: str, result: str, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    p = json.loads(params)
    args = (Path(model), Path(pairs), Path(out), p)
    cpu0 = time.process_time()
    r = run_trl(*args) if which == "trl" else run_ours(*args, share_prompt=which == "ours")
    r["timed_cpu_s"] = time.process_time() - cpu0  # CPU seconds (all threads) of the run, imports left out
    Path(result).write_text(json.dumps(r))


def spawn(which: str, model: Path, pairs: Path, work: Path, p: dict, threads: int, i: int) -> dict:
    """One run in a fresh subprocess; its peak RSS comes from the kernel's rusage of that child."""
    out, result = work / f"{which}-{i}", work / f"{which}-{i}.json"
    cmd = [sys.executable, __file__, "--worker", which, "--model", str(model), "--pairs-file", str(pairs),
           "--out", str(out), "--params", json.dumps(p), "--result", str(result), "--threads", str(threads)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr_tail = []
    for line in proc.stderr:
        stderr_tail = (stderr_tail + [line])[-20:]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} run failed ({proc.returncode}):\n{''.join(stderr_tail)}")
    r = json.loads(result.read_text())
    r.update(which=which, process_s=time.perf_counter() - t0, peak_rss_mb=usage.ru_maxrss / 1024,
             samples_per_s=p["pairs"] / r["elapsed_s"], cpu_s=usage.ru_utime + usage.ru_stime,
             load_1min=os.getloadavg()[0])
    return r


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # one measured run, started by spawn()
        wp = argparse.ArgumentParser()
        for name in ("--worker", "--model", "--pairs-file", "--out", "--params", "--result"):
            wp.add_argument(name, required=True)
        wp.add_argument("--threads", type=int, required=True)
        w = wp.parse_args(argv)
        worker(w.worker, w.model, w.pairs_file, w.out, w.params, w.result, w.threads)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model reference (folder, .gguf, alias such as smollm2-135m-instruct, Hub id); "
                    "default: a tiny random Llama built in a temp dir")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI (well under a minute)")
    ap.add_argument("--repeats", type=int, help="runs of each trainer (alternating)")
    ap.add_argument("--pairs", type=int, help="number of pairs (default 1024, smoke 48; with --model 32, smoke 4)")
    ap.add_argument("--batch-size", type=int, help="pairs per step (default 8; with --model --smoke 2)")
    ap.add_argument("--max-length", type=int, help="max prompt + answer tokens (default 128; with --model 192)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--concat", action="store_true",
                    help="also run ours with the 2B-row concatenated batch (prompt run twice): the prompt-sharing ablation")
    args = ap.parse_args(argv)
    model = None
    if args.model:
        from prefwork.pipeline.models import describe_model, model_label, resolve_model

        model = resolve_model(args.model, CACHE_ROOT)
        info = describe_model(model)
        p = dict(MODEL_SMOKE if args.smoke else MODEL, model=model_label(args.model), parameters=info["parameters"],
                 layers=info["num_hidden_layers"], hidden=info["hidden_size"], vocab=info["vocab_size"])
    else:
        p = dict(SMOKE if args.smoke else FULL)
    for key in ("repeats", "pairs", "batch_size", "max_length"):
        p[key] = getattr(args, key) or p[key]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        work = Path(tmp)
        model, pairs = make_inputs(work, p, model)
        runs = []
        variants = ("ours", "trl", "ours_concat") if args.concat else ("ours", "trl")
        for i in range(p["repeats"]):
            for which in (variants if i % 2 == 0 else variants[::-1]):
                runs.append(spawn(which, model, pairs, work, p, args.threads, i))
                r = runs[-1]
                print(f"  run {len(runs)}: {which:11s} {r['elapsed_s']:7.1f} s  {r['samples_per_s']:7.2f} pairs/s  "
                      f"CPU {r['timed_cpu_s']:6.1f} s  peak RSS {r['peak_rss_mb']:6.0f} MB  first loss {r['losses'][0]:.6f}  "
                      f"load {r['load_1min']:.1f}", flush=True)
    return report(runs, p, load, args)


def report(runs: list[dict], p: dict, load: tuple, args) -> int:
    from rich.console import Console
    from rich.table import Table

    kinds = [w for w in ("ours", "trl", "ours_concat") if any(r["which"] == w for r in runs)]
    med = {w: {k: statistics.median(r[k] for r in runs if r["which"] == w)
               for k in ("samples_per_s", "elapsed_s", "peak_rss_mb", "timed_cpu_s")} for w in kinds}
    first = {w: [r["losses"][0] for r in runs if r["which"] == w] for w in med}
    final = {w: [r["losses"][-1] for r in runs if r["which"] == w] for w in med}
    first_equal = abs(first["ours"][0] - first["trl"][0]) < 1e-4
    final_close = abs(final["ours"][0] - final["trl"][0]) <= 0.01 * abs(final["trl"][0])
    what = (f"{p['model']} ({p['parameters'] / 1e6:.1f}M, {p['layers']}x{p['hidden']}, vocab {p['vocab']:,})"
            if p.get("model") else f"{p['layers']}x{p['hidden']} Llama")
    table = Table(title=f"DPO training, {p['pairs']} pairs, {what}, batch {p['batch_size']}, "
                        f"max_length {p['max_length']}, fp32, {args.threads} threads")
    for col in ("trainer", "pairs/s", "time s", "CPU s", "peak RSS MB", "first loss", "final loss", "reference pass s"):
        table.add_column(col, justify="right")
    for w in kinds:
        ref = [r.get("reference_s") for r in runs if r["which"] == w and r.get("reference_s") is not None]
        table.add_row(w, f"{med[w]['samples_per_s']:.2f}", f"{med[w]['elapsed_s']:.1f}", f"{med[w]['timed_cpu_s']:.1f}",
                      f"{med[w]['peak_rss_mb']:.0f}",
                      f"{first[w][0]:.5f}", f"{final[w][0]:.5f}", f"{statistics.median(ref):.1f}" if ref else "-")
    Console().print(table)
    ratio = med["ours"]["samples_per_s"] / med["trl"]["samples_per_s"]
    mem = med["ours"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"]
    cpu = med["trl"]["timed_cpu_s"] / med["ours"]["timed_cpu_s"]  # less swayed than wall time by other load
    valid = first_equal and final_close
    target = ("2x", "0.8") if p.get("model") else ("1.5x", "1.0")  # a real model: issue #18's targets
    end = os.getloadavg()
    print(f"throughput ratio ours/TRL: {ratio:.2f}x (target >= {target[0]}); CPU-time ratio TRL/ours: {cpu:.2f}x "
          f"(CPU seconds of the timed part); peak RSS ratio ours/TRL: {mem:.2f} "
          f"(target <= {target[1]}); comparison valid (first loss equal, final within 1%): {valid}; "
          f"load average at start: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, at end: {end[0]:.1f}/{end[1]:.1f}/{end[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    if "ours_concat" in med:
        share = med["ours"]["samples_per_s"] / med["ours_concat"]["samples_per_s"]
        print(f"prompt sharing: ours shared-prompt / ours 2B-row concatenated = {share:.2f}x; "
              f"concatenated / TRL = {med['ours_concat']['samples_per_s'] / med['trl']['samples_per_s']:.2f}x")
    out = {"params": p, "threads": args.threads, "load_avg": load, "load_avg_end": end, "runs": runs, "median": med, "ratio": ratio,
           "rss_ratio": mem, "cpu_ratio": cpu, "valid": valid}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if valid else 1


if __name__ == "__main__":
    raise SystemExit(main())
