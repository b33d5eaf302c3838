"""Integration: a real ``prefect server start`` on loopback, the refresh deployment served by
``prefwork deploy refresh --cron ...`` in a subprocess, a run triggered through Prefect's API,
and a new dataset version published by it. Everything started here is killed at the end."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from prefwork.pipeline.procs import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group this test started: SIGINT (Prefect shuts down cleanly), then SIGKILL."""
    stop_process_group(proc, first=signal.SIGINT, wait=20)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"prefect server not healthy in {timeout} s:\n{log.read_text()[-3000:]}")


def test_served_refresh_deployment_publishes_a_version(tmp_path, tiny_random_policy):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefwork.pipeline.datasets_store import DatasetStore

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_LOGGING_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join((DATA / "prompts" / "train.jsonl").read_text().splitlines()[:4]) + "\n")
    ws = tmp_path / "ws"
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    procs = []
    try:
        with open(server_log, "wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                       "--port", str(port)], cwd=tmp_path, env=server_env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(server)
        _wait_healthy(api, server, server_log, timeout=180)
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen(
                [sys.executable, "-m", "prefwork.flows.cli", "deploy", "refresh", "--cron", "0 2 * * *", "--deployment",
                 "nightly-test", "--workspace", str(ws), "--prompts", str(prompts), "--policy",
                 str(tiny_random_policy), "--engine", "transformers", "--n", "2", "--max-tokens", "8",
                 "--shard-size", "2", "--curriculum", "judge_margin"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(serve)
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deadline = time.time() + 180
            while True:
                try:
                    deployment = client.read_deployment_by_name("refresh_dataset/nightly-test")
                    break
                except Exception:  # noqa: BLE001 - not registered yet
                    if serve.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"deployment never appeared:\n{serve_log.read_text()[-3000:]}")
                    time.sleep(1)
            assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
            assert deployment.parameters["config"]["workspace"] == str(ws)
            run = client.create_flow_run_from_deployment(deployment.id)
            deadline = time.time() + 400
            while True:
                run = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    break
                if time.time() > deadline or serve.poll() is not None:
                    raise RuntimeError(f"run {run.id} stuck in {run.state}:\n{serve_log.read_text()[-3000:]}")
                time.sleep(1)
            assert run.state.is_completed(), f"{run.state}:\n{serve_log.read_text()[-4000:]}"
            assert run.deployment_id == deployment.id
        version = DatasetStore(ws).get("latest")
        assert version.name == "v0001" and version.manifest["rows"]["prompts"] == 4
        assert version.manifest["policy"]["path"] == str(tiny_random_policy.resolve())
    finally:
        for proc in reversed(procs):
            _stop(proc)
