"""The package installs: a wheel built from the sources, installed (not editable) into a fresh venv,
runs ``prefwork`` from an empty directory with its shipped data found inside the installation.

The temporary venv reuses the dependencies already installed in this test's environment, with no
network: a ``.pth`` line puts that environment's site-packages on the new venv's path. A path line
in a ``.pth`` file does not run the ``.pth`` files inside that folder, so the editable install's
finder (``__editable__...prefwork...pth``) stays out and ``prefwork`` resolves to the wheel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: what the wheel is built from (tests, runs and build output stay behind)
SOURCES = ("pyproject.toml", "README.md", "prefwork", "pipeline", "evaluators", "train", "flows", "data")


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def _source_copy(dest: Path) -> Path:
    """The package sources in a fresh folder: no stale ``build/`` can slip into the wheel."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = ROOT / name
        shutil.copytree(src, dest / name, ignore=skip) if src.is_dir() else shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(the temp venv's bin folder, an environment for it): the wheel built and installed there."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    src = _source_copy(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(src)], tmp, env)
    (wheel,) = (tmp / "dist").glob("prefwork-*.whl")
    venv = tmp / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp,
                     env).stdout.strip())
    (site / "_prefwork_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         tmp, env)
    env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PREFECT_HOME": str(tmp / "prefect"),
           "PREFWORK_PROGRESS": "0"}
    return venv / "bin", env


@pytest.fixture
def empty_dir(tmp_path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_prefwork_resolves_to_the_wheel_not_the_clone(installed, empty_dir):
    bin_dir, env = installed
    code = ("import prefwork, prefwork.flows.commands.loop as c; from prefwork.pipeline import DATA_DIR; "
            "print(prefwork.__file__); print(c.__file__); print(DATA_DIR)")
    out = _run([str(bin_dir / "python"), "-c", code], empty_dir, env).stdout.split()
    venv = bin_dir.parent.resolve()
    for path in out:
        assert Path(path).resolve().is_relative_to(venv), out
    data = Path(out[2])
    for shipped in ("prompts/train.jsonl", "prompts/heldout.jsonl", "corpus/sft.jsonl", "judges/pairwise/config.yaml"):
        assert (data / shipped).is_file(), shipped


def test_help_judge_and_toy_run_from_an_empty_directory(installed, empty_dir):
    bin_dir, env = installed
    prefwork = str(bin_dir / "prefwork")
    assert "loop" in _run([prefwork, "--help"], empty_dir, env).stdout
    loop_help = _run([prefwork, "loop", "--help"], empty_dir, {**env, "COLUMNS": "400"}).stdout
    assert f"{bin_dir.parent}/lib/" in loop_help and "prefwork/data/prompts/train.jsonl" in loop_help  # installed data
    # candidates made from a shipped prompts file (each answer is the prompt's reference answer)
    make = ("import polars as pl; from prefwork.pipeline import DATA_DIR; from prefwork.pipeline.prompts import "
            "load_prompts; p = load_prompts(DATA_DIR / 'prompts' / 'heldout.jsonl').head(8); "
            "pl.DataFrame({'prompt_id': p['prompt_id'], 'prompt': p['prompt'], 'candidate_id': [0] * p.height, "
            "'text': p['prompt'].str.slice(0, 40), 'model': ['m'] * p.height, 'seed': [0] * p.height, "
            "'finish_reason': ['stop'] * p.height, 'num_tokens': [8] * p.height, 'task': p['task'], "
            "'meta': p['meta']}).write_parquet('candidates.parquet')")
    _run([str(bin_dir / "python"), "-c", make], empty_dir, env)
    _run([prefwork, "judge", "--judge", "rules", "--in", "candidates.parquet", "--out", "scores.parquet"], empty_dir, env)
    import polars as pl

    scores = pl.read_parquet(empty_dir / "scores.parquet")
    assert scores.height >= 8 and scores["score"].is_between(0, 1).all()
    _run([prefwork, "toy", "--seeds", "0", "--out", "toy"], empty_dir, env, timeout=900)
    for name in ("summary.csv", "history.csv", "findings.json", "config.json"):
        assert (empty_dir / "toy" / name).is_file(), name
    assert list((empty_dir / "toy").glob("toy_*.png"))
