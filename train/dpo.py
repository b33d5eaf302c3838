"""Preference training (the DPO family of train/losses.py) on a ``transformers.Trainer``.

``train_dpo`` tokenises PAIRS rows, precomputes the reference log-probs once (no reference
model is held while training), trains with one forward per batch that scores chosen and
rejected together (by default one ``[prompt | chosen | rejected]`` row per pair, so the
prompt runs once: ``train.shared_prompt``), and writes into ``out_dir``: checkpoints (resumed
from when present), ``metrics.jsonl`` (one line per logging window, with held-out reward
accuracy and the 3D-properties watch), ``config.json`` and the final model + tokenizer in
``final/``. Being a plain Trainer subclass, accelerate / FSDP / DeepSpeed launchers work unchanged.
With ``peft: lora`` only LoRA adapters train, the reference is the same model with its adapters
disabled, checkpoints hold adapters, and ``final/`` is the merged model (``train.lora``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import polars as pl
import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from prefwork.pipeline.pairs import drop_identical
from prefwork.pipeline.schemas import PAIRS, validate
from prefwork.pipeline.store import write_json, write_table
from prefwork.train.dpo_monitor import LikelihoodMonitor, MetricsFile, save_final
from prefwork.train.logps import PairCollator, compute_reference_logps, concatenated_logps, encode_pairs
from prefwork.train.shared_prompt import SharedPromptCollator
from prefwork.train.configs import DPOConfig  # noqa: F401 - re-exported
from prefwork.train.lora import adapters_disabled, check_checkpoint, load_policy, save_merged, uses_lora
from prefwork.train.losses import get_loss

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.parquet"


class PreferenceTrainer(Trainer):
    """A Trainer whose loss is a preference loss over (chosen, rejected) pairs.

    Batches come from ``SharedPromptCollator`` (or ``PairCollator``); reference log-probs
    travel in the batch. Per-batch statistics are accumulated and averaged into each log
    line (TRL's metric names).
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a mean; Trainer divides by grad_accum

    def __init__(self, *args, dpo_config: DPOConfig, has_reference: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.dpo_config = dpo_config
        self.loss_fn = get_loss(dpo_config.loss)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.monitor = LikelihoodMonitor(dpo_config.monitor_ratio, has_reference)

    def pair_losses(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-pair losses (B,) and the (B,) tensors behind the logged metrics.

        Losses with ``average_log_prob`` see per-token means; the logged rewards always
        use sequence sums, ``beta * (policy - reference)``, as TRL logs them.
        """
        out = concatenated_logps(model, inputs)
        policy_c, policy_r = out["policy_chosen_logps"], out["policy_rejected_logps"]
        ref_c = inputs.get("reference_chosen_logps", torch.zeros_like(policy_c.detach()))
        ref_r = inputs.get("reference_rejected_logps", torch.zeros_like(policy_r.detach()))
        args = (policy_c, policy_r, ref_c, ref_r)
        if self.loss_fn.average_log_prob:
            n_c, n_r = out["chosen_counts"].clamp(min=1), out["rejected_counts"].clamp(min=1)
            args = (policy_c / n_c, policy_r / n_r, ref_c / n_c, ref_r / n_r)
        nll = {"chosen_nll": out["chosen_nll"]} if self.loss_fn.needs_chosen_nll else {}
        losses, _, _ = self.loss_fn(*args, beta=self.dpo_config.beta, **self.dpo_config.loss_options(), **nll)
        beta = self.dpo_config.beta
        stats = {"rewards/chosen": beta * (policy_c.detach() - ref_c),
                 "rewards/rejected": beta * (policy_r.detach() - ref_r),
                 "logps/chosen": policy_c.detach(), "logps/rejected": policy_r.detach()}
        stats["rewards/margins"] = stats["rewards/chosen"] - stats["rewards/rejected"]
        stats["rewards/accuracies"] = (stats["rewards/chosen"] > stats["rewards/rejected"]).float()
        stats["logratio/chosen"], stats["logratio/rejected"] = policy_c.detach() - ref_c, policy_r.detach() - ref_r
        return losses, stats

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Mean preference loss of the batch; records its statistics for the next log line."""
        losses, stats = self.pair_losses(model, inputs)
        for key, values in stats.items():
            self._metrics[key].append(self.accelerator.gather_for_metrics(values).mean().item())
        loss = losses.mean()
        return (loss, stats) if return_outputs else loss

    @torch.no_grad()
    def eval_metrics(self) -> dict[str, float]:
        """Loss, reward accuracy and margin of the current model on the held-out pairs."""
        if self.eval_dataset is None or len(self.eval_dataset) == 0:
            return {}
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        for batch in self.get_eval_dataloader():
            losses, stats = self.pair_losses(self.model, self._prepare_inputs(batch))
            for key, values in (("loss", losses), ("rewards/accuracies", stats["rewards/accuracies"]),
                                ("rewards/margins", stats["rewards/margins"])):
                sums[key] += self.accelerator.gather_for_metrics(values).sum().item()
            count += self.accelerator.gather_for_metrics(losses).numel()
        self.model.train(was_training)
        return {f"eval_{key}": value / count for key, value in sums.items()}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the window's averaged pair metrics, eval reward accuracy and the 3D watch."""
        if "loss" in logs and self._metrics:
            window = {key: sum(v) / len(v) for key, v in self._metrics.items()}
            shifts = (window.pop("logratio/chosen"), window.pop("logratio/rejected"))
            logs.update(window)
            logs.update(self.monitor.update(*shifts, step=self.state.global_step))
            logs.update(self.eval_metrics())
            self._metrics.clear()
        super().log(logs, start_time)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def split_eval(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, eval) row indices; at least one training row is kept."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = min(int(round(n * fraction)), n - 1) if fraction > 0 else 0
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def _reference_key(examples: list[dict], model_dir: Path) -> str:
    """Hash of the reference model's path and the token ids: a cache entry is reused only
    for the same model and the same tokenised pairs."""
    ids = [[e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]] for e in examples]
    return hashlib.sha256(json.dumps([str(model_dir.resolve()), ids]).encode()).hexdigest()


def attach_reference(examples: list[dict], model_dir: Path, out_dir: Path, cfg: DPOConfig,
                     collator: PairCollator | SharedPromptCollator, model=None) -> list[dict]:
    """Add ``reference_chosen_logps`` / ``reference_rejected_logps`` to each example.

    Computed once by ``model_dir`` (no grad) and cached in ``out_dir/reference_logps.parquet``
    (with a key of model path + token ids), so a resumed run reuses them; the reference
    model is freed before training. ``model``: the policy with LoRA adapters over ``model_dir``'s
    weights, which then computes the pass itself with its adapters disabled (``train.lora``), so
    no second copy of the weights is loaded. Under several processes rank 0 computes the cache
    first and the other ranks read it, so every rank trains on the same values.
    """
    cache, key = out_dir / REFERENCE_FILE, _reference_key(examples, model_dir)
    state = PartialState()
    with state.main_process_first():  # with several ranks, rank 0 computes and writes; the others read
        table = pl.read_parquet(cache) if cache.exists() else None
        if table is None or table.height != len(examples) or table["reference_key"][0] != key:
            if model is not None:
                with adapters_disabled(model):
                    chosen, rejected = compute_reference_logps(model.to(state.device), examples, collator,
                                                               cfg.reference_batch_size)
            else:
                reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(state.device)
                chosen, rejected = compute_reference_logps(reference, examples, collator, cfg.reference_batch_size)
                del reference
            table = pl.DataFrame({"reference_chosen_logps": chosen, "reference_rejected_logps": rejected,
                                  "reference_key": [key] * len(examples)})
            write_table(table, cache)
    return [{**e, "reference_chosen_logps": c, "reference_rejected_logps": r}
            for e, c, r in zip(examples, table["reference_chosen_logps"], table["reference_rejected_logps"])]


def _training_args(out_dir: Path, cfg: DPOConfig) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, optim=cfg.optim, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        eval_strategy="no", remove_unused_columns=False, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # every weight of a causal LM is used: skip DDP's graph walk per step
    )


def train_dpo(model_dir: str | Path, pairs: pl.DataFrame, out_dir: str | Path, cfg: DPOConfig | None = None,
              *, reference_dir: str | Path | None = None) -> Path:
    """Train ``model_dir`` on PAIRS rows with ``cfg.loss``; return ``out_dir/final``.

    The reference is ``reference_dir`` (default: ``model_dir``, the usual DPO setting).
    A checkpoint under ``out_dir`` is resumed from.

    Pairs whose chosen text equals the rejected text (a file made elsewhere; ``build_pairs`` never
    makes them) are dropped with a warning giving the count, and a set made only of them is refused.
    Why drop-and-warn rather than refuse: such a pair's preference term is exactly zero whatever the
    weights (the same text has the same log-prob under policy and reference), so its gradient
    vanishes and dropping it loses no signal; kept, it would add a constant ln 2 to the loss mean,
    count as a miss in the reward accuracy and, with an NLL term (dpo_sft, slic), train on the text
    as plain SFT. Refusing a whole file for a few such rows would only send users to filter it by hand.
    """
    cfg = cfg or DPOConfig()
    loss_fn = get_loss(cfg.loss)  # fail early on an unknown name
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    pairs = validate(pairs, PAIRS, "pairs given to train_dpo")
    if pairs.height == 0:
        raise ValueError("train_dpo got no pairs to train on")
    pairs, same = drop_identical(pairs)
    if same and pairs.height == 0:
        raise ValueError(f"all {same} pairs given to train_dpo have the same chosen and rejected text: nothing to "
                         "train on")
    if same:
        log.warning("dropped %d of %d pairs whose chosen text equals the rejected text (no preference to learn)",
                    same, same + pairs.height)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collator = SharedPromptCollator(pad_id) if cfg.share_prompt else PairCollator(pad_id)
    examples = encode_pairs(tokenizer, pairs.iter_rows(named=True), cfg.max_length)
    checkpoint = get_last_checkpoint(str(out_dir))
    check_checkpoint(checkpoint, cfg)
    # LoRA: one model, loaded before the reference pass, whose base (adapters off) is the reference;
    # full fine-tuning: the reference is loaded, used and freed before the policy is loaded
    model = load_policy(model_dir, cfg, cfg.seed) if uses_lora(cfg) else None
    own_reference = model is not None and Path(reference_dir or model_dir) == model_dir
    if not loss_fn.reference_free:
        examples = attach_reference(examples, Path(reference_dir or model_dir), out_dir, cfg, collator,
                                    model=model if own_reference else None)
    train_idx, eval_idx = split_eval(len(examples), cfg.eval_fraction, cfg.seed)
    write_json(out_dir / "config.json", {**asdict(cfg), "model_dir": str(model_dir),
                                         "reference_dir": str(reference_dir or model_dir),
                                         "num_train_pairs": len(train_idx), "num_eval_pairs": len(eval_idx)})
    model = model if model is not None else load_policy(model_dir, cfg, cfg.seed)
    trainer = PreferenceTrainer(
        model=model, args=_training_args(out_dir, cfg), data_collator=collator, processing_class=tokenizer,
        train_dataset=_ListDataset([examples[i] for i in train_idx]),
        eval_dataset=_ListDataset([examples[i] for i in eval_idx]) if eval_idx else None,
        callbacks=[MetricsFile(out_dir / "metrics.jsonl")], dpo_config=cfg,
        has_reference=not loss_fn.reference_free,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    if uses_lora(cfg):  # adapter/ and the merged model in final/ (what vLLM and the next step load)
        return save_merged(trainer, out_dir / "final", model_dir, tokenizer)
    return save_final(trainer, out_dir / "final")
