"""Real multi-process training: `accelerate launch` with two gloo CPU processes gives the same
loss curve as one process with the same global batch, and the reference cache is computed
once (rank 0) and identical (train/launch.py, train/launch_entry.py, train/dpo.py)."""
from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import ROOT
from test_train_cli import inputs  # noqa: F401 - the shared module fixture
from prefwork.pipeline.run import read_metrics
from prefwork.train.launch import launch_training

TWO_PROCESS = ROOT / "data" / "configs" / "cpu_two_process.yaml"


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, inputs, monkeypatch):  # noqa: F811
    policy, pairs = inputs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = {"model": str(policy), "data": str(pairs), "max_steps": 4, "learning_rate": 2e-3, "max_length": 64}
    two = launch_training(TWO_PROCESS, overrides=common, run_dir=tmp_path / "two", echo=None)
    one = launch_training(TWO_PROCESS, overrides={**common, "batch_size": 8, "launcher.mode": "local"},
                          run_dir=tmp_path / "one", echo=None)
    assert "--num_processes" in two.command and two.command[two.command.index("--num_processes") + 1] == "2"
    assert two.command[two.command.index("--main_process_port") + 1] == "0"  # a free port, not a fixed 29500
    assert json.loads((tmp_path / "two" / "result.json").read_text())["world_size"] == 2
    m1, m2 = read_metrics(tmp_path / "one" / "train"), read_metrics(tmp_path / "two" / "train")
    assert [m["step"] for m in m1] == [m["step"] for m in m2] == [1, 2, 3, 4]
    for a, b in zip(m1, m2):
        for key in ("loss", "logps/chosen", "logps/rejected", "rewards/margins"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), (a["step"], key, a[key], b[key])
    assert m2[-1]["loss"] < m2[0]["loss"] - 0.05  # it learned
    ref1 = pl.read_parquet(tmp_path / "one" / "train" / "reference_logps.parquet")
    ref2 = pl.read_parquet(tmp_path / "two" / "train" / "reference_logps.parquet")
    assert ref1.equals(ref2)
    assert "accelerate" in (tmp_path / "two" / "train.log").read_text()  # the subprocess's output was logged
