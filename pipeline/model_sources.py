"""GGUF files -> Hugging Face model folders, converted once into a content-keyed cache folder.

Why: vLLM 0.32's CPU build cannot read GGUF, and transformers 5.19 dequantizes GGUF on load but
refuses to ``save_pretrained`` the result; a model rebuilt from the same config without its
``quantization_config`` takes the dequantized weights and saves (DESIGN.md). ``pipeline.models``
decides when to convert; this module does it. Hub downloads live here too: both turn a reference
that is not a folder into one.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from prefwork.pipeline.schemas import SchemaError
from prefwork.pipeline.store import file_hash, write_json

#: Written into every converted folder: where it came from (and evidence it was converted once).
SOURCE_FILE = "prefwork_source.json"

#: Seconds the first Hub request may take before the Hub counts as unreachable.
HUB_TIMEOUT_S = 10.0

def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- GGUF


def gguf_cache_dir(gguf_path: str | os.PathLike, cache_root: str | os.PathLike) -> Path:
    """``<cache_root>/models/<stem>-<sha16>``: the converted folder's place, keyed by file content.

    sha256 of the whole file (1 MB reads): about 0.07 s for SmolLM2's 98 MB here, so no shortcut
    (size/mtime) is needed and a re-download of the same bytes hits the same folder.
    """
    return _cache_dir(Path(gguf_path), file_hash(gguf_path), cache_root)


def _cache_dir(gguf_path: Path, sha256: str, cache_root: str | os.PathLike) -> Path:
    return Path(cache_root) / "models" / f"{gguf_path.stem}-{sha256[:16]}"


def convert_gguf_cached(gguf_path: str | os.PathLike, cache_root: str | os.PathLike,
                        log: Callable[[str], None] | None = stderr_log, alias: str | None = None) -> Path:
    """Return the converted folder of ``gguf_path``, converting it first if it is not cached yet.

    The conversion writes into a temp folder inside ``<cache_root>/models`` and renames it into
    place when complete, so a killed conversion never leaves a folder that looks finished; two
    processes converting at once both succeed and one folder wins.
    """
    log = log or (lambda _msg: None)
    gguf_path = Path(gguf_path).resolve()
    sha256 = file_hash(gguf_path)
    final = _cache_dir(gguf_path, sha256, cache_root)
    if (final / SOURCE_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        size_mb = gguf_path.stat().st_size / 1e6
        log(f"[prefwork] converting {gguf_path.name} ({size_mb:.0f} MB GGUF) once into {final} "
            "(dequantize to float32 safetensors; about 15-40 s on CPU) ...")
        started = time.perf_counter()
        info = convert_gguf(gguf_path, work)
        info.update(seconds=round(time.perf_counter() - started, 1), sha256=sha256, alias=alias)
        write_json(work / SOURCE_FILE, info)
        _open_permissions(work)
        try:
            os.rename(work, final)
        except OSError:
            if not (final / SOURCE_FILE).is_file():  # not another process's finished folder
                raise
        log(f"[prefwork] converted {gguf_path.name} in {info['seconds']:.0f} s: "
            f"{info['weights_bytes'] / 1e6:.0f} MB of float32 weights in {final}")
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


def _open_permissions(folder: Path) -> None:
    """Make the folder readable like any model folder (temp dirs and files are created private)."""
    os.chmod(folder, 0o755)
    for f in folder.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)


def _remove_stale_temps(final: Path, older_than_s: float = 3600) -> None:
    """Delete temp folders of killed conversions of this file (left more than an hour ago)."""
    now = time.time()
    for tmp in final.parent.glob(f".{final.name}.*.partial"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def gguf_metadata(gguf_path: str | os.PathLike) -> dict:
    """The GGUF file's scalar metadata (token lists and merges left out), via the ``gguf`` package."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    meta = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.scores"):
            meta[key + ".count"] = len(field.data)
            continue
        meta[key] = field.contents()
    return meta


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Dequantize a GGUF into ``out_dir`` as a HF folder; return facts about it for provenance.

    transformers dequantizes GGUF on load (needs the ``gguf`` package) but will not save such a
    model ("GGUF ... not serializable"), so the loaded weights move (no copy: ``assign=True``)
    into a model rebuilt from the config without ``quantization_config`` -- built on the meta
    device, so the weights exist once in memory -- and that one is saved. Weights stay float32:
    exactly the dequantized values, and the fast dtype on CPUs without native bf16.
    The tokenizer is rebuilt from the GGUF metadata and saved with the file's chat template;
    generation_config.json carries the file's eos id so generation stops at the end of a turn.
    The result is reloaded and checked before it counts as converted.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir)
    meta = gguf_metadata(gguf_path)
    kwargs = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    try:  # transformers >= 5.19: ask for plain dequantized modules explicitly
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
    state = loaded.state_dict()
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)  # the GGUF's general.name; kept in prefwork_source.json instead
    config = type(loaded.config).from_dict(cfg)
    config.dtype = torch.float32
    del loaded
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True, assign=True)
    del state
    ids = {k: meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding")}
    model.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                                               pad_token_id=ids["padding"] if ids["padding"] is not None else ids["eos"])
    model.save_pretrained(out_dir)
    del model

    # also the old key, for readers older than transformers 5 (vLLM, llama.cpp's converters)
    config_path = out_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved["torch_dtype"] = "float32"
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    template = meta.get("tokenizer.chat_template")
    if template and not tokenizer.chat_template:
        tokenizer.chat_template = template
    if saved.get("max_position_embeddings"):
        tokenizer.model_max_length = int(saved["max_position_embeddings"])
    tokenizer.save_pretrained(out_dir)

    # reload and check what a sampler and a trainer rely on, before the folder counts as done
    check = AutoTokenizer.from_pretrained(str(out_dir))
    problems = []
    if template and check.chat_template != template:
        problems.append("the chat template was not kept")
    if ids["eos"] is not None and check.eos_token_id != ids["eos"]:
        problems.append(f"eos id {check.eos_token_id} != the file's {ids['eos']}")
    if len(check) < int(saved["vocab_size"]) and len(check) != meta.get("tokenizer.ggml.tokens.count"):
        problems.append(f"tokenizer has {len(check)} tokens, the model {saved['vocab_size']}")
    if problems:
        raise SchemaError(str(gguf_path), None, None, "conversion failed: " + "; ".join(problems))
    weights = sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))
    return {"gguf": str(gguf_path), "gguf_bytes": gguf_path.stat().st_size, "weights_bytes": weights,
            "dtype": "float32", "file_type": meta.get("general.file_type"), "name": meta.get("general.name"),
            "transformers": transformers.__version__, "gguf_package": _version("gguf")}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------- Hub


def hub_snapshot(repo_id: str, log: Callable[[str], None] | None = stderr_log, timeout: float = HUB_TIMEOUT_S) -> Path:
    """``snapshot_download(repo_id)`` into the HF cache; one clear error when the Hub is out of reach.

    huggingface_hub's first request (``repo_info``) has no timeout, so on a network that drops
    packets it would hang: that request is made here first, in a thread bounded by ``timeout``,
    and the download then pins the commit it returned. ``HF_HUB_OFFLINE=1`` means no traffic at
    all: only the local cache is tried. When the Hub cannot be reached a cached snapshot is used.
    """
    log = log or (lambda _msg: None)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    unreachable = None
    if offline:
        unreachable = "HF_HUB_OFFLINE is set"
    else:
        result: dict = {}

        def probe() -> None:
            from huggingface_hub import HfApi

            try:
                result["sha"] = HfApi().model_info(repo_id, timeout=timeout).sha
            except BaseException as exc:  # handed to the caller's thread
                result["error"] = exc

        thread = threading.Thread(target=probe, name="prefwork-hub-probe", daemon=True)
        thread.start()
        thread.join(timeout + 2)
        error = result.get("error")
        if thread.is_alive():
            unreachable = f"no answer from {constants.ENDPOINT} in {timeout:.0f} s"
        elif isinstance(error, (RepositoryNotFoundError, GatedRepoError)) or (
                isinstance(error, HfHubHTTPError) and getattr(error.response, "status_code", None) in (401, 403, 404)):
            raise SchemaError(None, None, "model", f"{repo_id!r} is not a local path, and the Hugging Face Hub has no "
                                                   f"model by that id that we may read (not found, private or gated: "
                                                   f"{type(error).__name__}); use a local model folder or a .gguf file instead") from error
        elif error is not None:
            unreachable = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        else:
            log(f"[prefwork] downloading {repo_id} from {constants.ENDPOINT} (HF cache) ...")
            try:
                return Path(snapshot_download(repo_id, revision=result["sha"], etag_timeout=timeout))
            except (OSError, HfHubHTTPError) as exc:
                unreachable = f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
        log(f"[prefwork] the Hugging Face Hub cannot be reached ({unreachable}); using the cached snapshot {folder}")
        return folder
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    raise SchemaError(None, None, "model",
                      f"{repo_id!r} is not a local path, so it was taken as a Hugging Face Hub id, but the Hugging Face Hub "
                      f"cannot be reached ({unreachable}) and the model is not in the local HF cache; use a local model "
                      "folder or a .gguf file instead (e.g. the alias smollm2-135m-instruct)")


