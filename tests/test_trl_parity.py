"""Parity with TRL 1.16's DPOTrainer (test-only dependency): same tiny model, same batch,
same reference; the first step's loss, logged rewards / log-probs (within 1e-4) and
gradient norm (relative 1e-4) agree. TRL's IPO averages log-probs per token; ours too.

The reference is a differently seeded model of the same tokenizer, so the rewards at the
first step are not trivially zero. TRL gets the prompt already rendered with the chat
template (a non-conversational dataset) and appends eos to the answers, as we do.
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from test_dpo_train import make_pairs, tiny_cfg
from prefwork.train.dpo import train_dpo
from prefwork.pipeline.run import read_metrics
from prefwork.train.policy import PolicyConfig, build_random_policy

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

torch.set_num_threads(1)
PARITY_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
               "logps/chosen", "logps/rejected")
TRL_LOSS = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge"}
BETA = 0.1
N_PAIRS = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(policy_dir, reference_dir): a tiny Llama and a noisy copy of it (one tokenizer).

    Two random inits are both near-uniform and score answers almost alike; the noise
    (std 0.1 on every weight) makes the reference disagree with the policy clearly.
    """
    texts = [t for col in ("prompt", "chosen", "rejected") for t in make_pairs()[col]] * 4
    root = tmp_path_factory.mktemp("parity")
    shape = dict(vocab_size=400, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    policy = build_random_policy(root / "policy", texts, PolicyConfig(**shape, seed=0))
    reference = build_random_policy(root / "reference", texts, PolicyConfig(**shape, seed=1))
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(reference)
    return policy, reference


def trl_first_step(policy_dir, reference_dir, pairs, loss_type: str, out_dir) -> dict:
    """TRL's logged metrics of its first optimizer step on ``pairs`` (one batch)."""
    return trl_run(policy_dir, reference_dir, pairs, loss_type, out_dir)[0]


def trl_run(policy_dir, reference_dir, pairs, loss_type: str, out_dir, steps: int = 1, learning_rate: float = 1e-3,
            peft_config=None) -> list[dict]:
    """TRL's logged metrics of its first ``steps`` optimizer steps, each on all of ``pairs`` (one batch);
    ``reference_dir`` None with a ``peft_config``: TRL's reference is the policy with its adapters disabled, and
    it seeds with ``args.seed`` (0) before drawing the adapters' init, as ``train.lora.add_lora`` does with ours."""
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    rows = [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                                     add_generation_prompt=True, tokenize=False),
             "chosen": r["chosen"], "rejected": r["rejected"]} for r in pairs.iter_rows(named=True)]
    args = trl.DPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=len(rows), gradient_accumulation_steps=1,
        max_steps=steps, logging_steps=1, learning_rate=learning_rate, beta=BETA, loss_type=[loss_type], max_length=64,
        bf16=False, report_to="none", save_strategy="no", seed=0, disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    ref_model = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32) if reference_dir else None
    trainer = trl.DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=peft_config)
    trainer.train()
    return [line for line in trainer.state.log_history if "loss" in line]


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(TRL_LOSS))
def test_first_step_matches_trl(models, tmp_path, loss):
    policy_dir, reference_dir = models
    pairs = make_pairs(N_PAIRS)
    cfg = tiny_cfg(loss=loss, beta=BETA, batch_size=N_PAIRS, grad_accum=1, max_steps=1, learning_rate=1e-3)
    train_dpo(policy_dir, pairs, tmp_path / "ours", cfg, reference_dir=reference_dir)
    ours = read_metrics(tmp_path / "ours")[0]
    theirs = trl_first_step(policy_dir, reference_dir, pairs, TRL_LOSS[loss], tmp_path / "trl")
    assert abs(theirs["rewards/margins"]) > 0.1  # the comparison is not trivially at zero
    for key in PARITY_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4), (key, ours[key], theirs[key])
    # same gradients: the clipped-before norm of the first step agrees too
    assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)


@pytest.mark.slow
def test_lora_steps_match_trl_with_a_peft_config(models, tmp_path):
    """LoRA against TRL's DPOTrainer given a ``peft_config`` (its reference: the adapters disabled). Step 1 is
    ln 2 on both sides (B = 0: policy = base = reference), but its gradient norm depends on the adapters' init
    and which weights train; step 2 compares the updated adapters against the reference."""
    peft = pytest.importorskip("peft")
    policy_dir, _ = models
    pairs, lora = make_pairs(N_PAIRS), dict(lora_r=4, lora_alpha=8.0, lora_dropout=0.0, lora_targets="all-linear")
    cfg = tiny_cfg(loss="dpo", beta=BETA, batch_size=N_PAIRS, grad_accum=1, max_steps=2, learning_rate=1e-2,
                   peft="lora", **lora)
    train_dpo(policy_dir, pairs, tmp_path / "ours", cfg)
    ours = read_metrics(tmp_path / "ours")
    config = peft.LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules="all-linear", bias="none",
                             task_type="CAUSAL_LM")
    theirs = trl_run(policy_dir, None, pairs, "sigmoid", tmp_path / "trl", steps=2, learning_rate=1e-2,
                     peft_config=config)
    assert abs(theirs[1]["rewards/margins"]) > 0.1  # step 2 moved away from the reference
    for step in (0, 1):
        for key in PARITY_KEYS:
            assert ours[step][key] == pytest.approx(theirs[step][key], abs=1e-4), (step, key, ours[step][key],
                                                                                   theirs[step][key])
        assert ours[step]["grad_norm"] == pytest.approx(theirs[step]["grad_norm"], rel=1e-4)
