"""LoRA from the command line (`prefwork train dpo --peft lora ...` in a subprocess), the LoRA GPU recipe's
dry run, and the LoRA memory benchmark's smoke mode (bench/lora_memory.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_cli
from test_dpo_train import make_pairs
from test_lora import assert_only_adapters_changed

RECIPE = ROOT / "data" / "configs" / "gpu_recipe_lora.yaml"
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora_cli") / "pairs.parquet"
    make_pairs(32).write_parquet(path)
    return path


def test_dry_run_of_the_lora_gpu_recipe_is_valid(tiny_random_policy, pairs_file, capsys):
    from prefwork.flows.cli import main

    assert main(["train", "dpo", "--config", str(RECIPE), "--model", str(tiny_random_policy), "--data",
                 str(pairs_file), "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] is None  # one GPU: in-process, no accelerate launch
    config = out["config"]
    assert (config["peft"], config["lora_r"], config["lora_targets"]) == ("lora", 16, "all-linear")
    assert config["schedule"] == "sdpo" and config["gradient_checkpointing"] is True
    full = yaml.safe_load((ROOT / "data" / "configs" / "gpu_recipe.yaml").read_text())
    lora = yaml.safe_load(RECIPE.read_text())
    assert lora["batch_size"] * lora["grad_accum"] == full["batch_size"] * full["grad_accum"] * 8  # same global batch


@pytest.mark.slow
def test_train_dpo_cli_with_lora_end_to_end(tiny_random_policy, pairs_file, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_random_policy), "data": str(pairs_file), "batch_size": 8,
                                   "logging_steps": 1, "eval_fraction": 0.0, "learning_rate": 1e-2,
                                   "max_length": 64}))
    run = tmp_path / "run"
    proc = run_cli("train", "dpo", "--config", str(cfg), "--peft", "lora", "--lora-r", "4", "--lora-alpha", "8",
                   "--lora-targets", "q_proj,v_proj", "--max-steps", "3", "--run-dir", str(run),
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["final_model"] == str(run / "train" / "final") and result["last_metrics"]["step"] == 3
    adapter = json.loads((run / "train" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    config = json.loads((run / "config.json").read_text())
    assert (config["peft"], config["lora_r"], config["lora_targets"]) == ("lora", 4, "q_proj,v_proj")
    assert_only_adapters_changed(tiny_random_policy, run / "train" / "final", run / "train" / "adapter")


@pytest.mark.slow
def test_unknown_lora_target_is_one_error_line(tiny_random_policy, pairs_file, tmp_path):
    proc = run_cli("train", "dpo", "--model", str(tiny_random_policy), "--data", str(pairs_file), "--peft", "lora",
                   "--lora-targets", "q_proj,query_key", "--max-steps", "1", "--run-dir", str(tmp_path / "run"),
                   "--quiet", env={"OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "--lora-targets" in errors[0] and "query_key" in errors[0] and "v_proj" in errors[0]  # names the choices


@pytest.mark.slow
def test_lora_memory_bench_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "lora_memory.py"), "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "peak RSS ratio LoRA/full" in proc.stdout and "load average" in proc.stdout
