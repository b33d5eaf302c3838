"""Supervised fine-tuning on (prompt, response) records with ``transformers.Trainer``.

Prompt tokens are masked out of the loss (labels = -100), responses end with the eos
token so the model learns to stop, and batches are padded dynamically. The same code
builds the embedded default policy (``init_policy``) and serves ``prefwork train sft``.
With ``peft: lora`` only LoRA adapters train; ``out_dir`` then holds the merged model and
``out_dir/../adapter`` the adapters (``train.lora``).
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoTokenizer, Trainer, TrainingArguments

from prefwork.pipeline.chat import render_prompt
from prefwork.pipeline.store import StageCache, content_key, file_hash, read_jsonl, write_json
from prefwork.train.configs import SFTConfig  # noqa: F401 - re-exported
from prefwork.train.lora import load_policy, save_merged, uses_lora
from prefwork.train.policy import PolicyConfig, build_random_policy


def encode_example(tokenizer, prompt: str, response: str, max_length: int) -> dict[str, list[int]]:
    """Token ids of prompt+response+eos, with labels -100 on the prompt part."""
    p_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p_ids + r_ids)[:max_length]
    labels = ([-100] * len(p_ids) + r_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}


class PadCollator:
    """Right-pad a list of encoded examples to the longest one in the batch."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(feats), width), -100, dtype=torch.long)
        mask = torch.zeros((len(feats), width), dtype=torch.long)
        for i, f in enumerate(feats):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def progress_bar_on() -> bool:
    """A tqdm bar on a terminal; in a log file its carriage returns make one endless line, so
    there the Trainer prints its loss dicts every ``logging_steps`` instead.
    ``PREFWORK_PROGRESS=1`` / ``0`` forces either."""
    return os.environ.get("PREFWORK_PROGRESS", "1" if sys.stderr.isatty() else "0") == "1"


def train_sft(model_dir: str | Path, records: list[dict], out_dir: str | Path, cfg: SFTConfig | None = None) -> Path:
    """Fine-tune the model in ``model_dir`` on ``records`` ({prompt, response}); save to ``out_dir``."""
    cfg = cfg or SFTConfig()
    out = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_policy(model_dir, cfg, cfg.seed)  # with LoRA adapters when cfg.peft is lora
    data = [encode_example(tokenizer, r["prompt"], r["response"], cfg.max_length) for r in records]
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=50, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, ddp_find_unused_parameters=False,
        disable_tqdm=not progress_bar_on(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=PadCollator(tokenizer.pad_token_id))
    result = trainer.train()
    if uses_lora(cfg):  # the adapters in out/../adapter, the merged model + tokenizer in out
        save_merged(trainer, out, model_dir, tokenizer)
    else:
        trainer.save_model(str(out))  # rank 0 only under accelerate; unwraps DDP/FSDP
    if not trainer.is_world_process_zero():
        return out
    tokenizer.save_pretrained(out)
    write_json(out / "sft_metrics.json", {"train_loss": result.training_loss, "steps": result.global_step,
                                          "config": asdict(cfg), "log": trainer.state.log_history})
    return out


def load_corpus(path: str | Path) -> list[dict]:
    """Read the SFT corpus (JSONL of {prompt, response})."""
    return read_jsonl(path)  # UTF-8 with or without a BOM; errors name the file and the line


def init_policy(cache_root: str | Path, corpus_path: str | Path,
                policy_cfg: PolicyConfig | None = None, sft_cfg: SFTConfig | None = None) -> Path:
    """Build + SFT the default tiny policy, cached by corpus hash and configs; return its dir.

    A second call with the same corpus and configs returns the cached directory at once.
    """
    return init_policy_cached(cache_root, corpus_path, policy_cfg, sft_cfg)[0]


def init_policy_cached(cache_root: str | Path, corpus_path: str | Path, policy_cfg: PolicyConfig | None = None,
                       sft_cfg: SFTConfig | None = None) -> tuple[Path, bool]:
    """``init_policy`` that also says whether the cache served the policy: ``(model dir, cached)``."""
    policy_cfg, sft_cfg = policy_cfg or PolicyConfig(), sft_cfg or SFTConfig()
    key = content_key("init_policy", {"corpus": file_hash(corpus_path)},
                      {"policy": asdict(policy_cfg), "sft": asdict(sft_cfg)})

    def produce(tmp: Path) -> None:
        records = load_corpus(corpus_path)
        texts = [r["prompt"] for r in records] + [r["response"] for r in records]
        build_random_policy(tmp / "init", texts, policy_cfg)
        train_sft(tmp / "init", records, tmp / "model", sft_cfg)
        shutil.rmtree(tmp / "model" / "checkpoints", ignore_errors=True)
        shutil.rmtree(tmp / "init", ignore_errors=True)

    entry, cached = StageCache(cache_root).run("policy", key, produce)
    return entry / "model", cached
