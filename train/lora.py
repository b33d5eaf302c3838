"""LoRA adapters (peft) for the DPO family and SFT: attach, reference with adapters off, save, merge.

With ``peft: lora`` (``configs.LoraOptions``) the policy is the base model wrapped by peft's
``get_peft_model``: the base weights are frozen and only the low-rank adapters train, so the
optimizer holds two moments for the adapters alone, and no gradient is kept for a base weight.
A DPO run needs no second copy of the weights for its reference: the reference log-probs are
the same model's with the adapters disabled (``adapters_disabled``, peft's ``disable_adapter()``),
computed once in the trainer's reference pass before training (``train.dpo.attach_reference``) --
cheaper than a forward under ``disable_adapter()`` every step, and at that point the adapters
add nothing anyway (peft initialises B = 0), so the pass runs on the model that then trains.

A run writes its checkpoints as adapters (the Trainer saves a peft model's adapter and resumes
from it), the final adapter in ``adapter/`` and, beside it, the merged model
(``merge_and_unload()``; ``final/`` of a DPO run) with the tokenizer: a plain model folder
that vLLM, transformers and the next sDPO step or loop round load like any other. So sDPO
chains adapters correctly: step t starts from the merged model after step t-1, puts fresh
adapters on it, and its reference (adapters off) is exactly that merged model.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from prefwork.train.configs import LoraOptions

log = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"


def uses_lora(cfg: LoraOptions) -> bool:
    return cfg.peft == "lora"


def is_peft_model(model) -> bool:
    """Whether ``model`` (possibly DDP-wrapped) is a peft model with adapters."""
    return hasattr(getattr(model, "module", model), "disable_adapter")


def add_lora(model, cfg: LoraOptions, seed: int):
    """``model`` wrapped with fresh LoRA adapters as ``cfg`` says (seeded: the A matrices are random).

    An unknown target module name is a ``ValueError`` naming the option and the model's linear layers.
    """
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                          target_modules=cfg.lora_target_modules(), task_type="CAUSAL_LM")
    _check_targets(model, cfg)
    torch.manual_seed(seed)  # the adapters' init is part of the run: a rerun (and a resume) starts alike
    wrapped = get_peft_model(model, peft_cfg)
    if getattr(cfg, "gradient_checkpointing", False):
        # frozen embeddings: reentrant checkpointing would pass the adapters no gradient (TRL does the same;
        # transformers 5's default, non-reentrant checkpointing does not need it)
        wrapped.enable_input_require_grads()
    trainable, total = wrapped.get_nb_trainable_parameters()
    log.info("LoRA r=%d alpha=%g on %s: %d trainable of %d parameters (%.2f%%)", cfg.lora_r, cfg.lora_alpha,
             cfg.lora_targets, trainable, total, 100 * trainable / total)
    return wrapped


def _check_targets(model, cfg: LoraOptions) -> None:
    """Every module name in ``lora_targets`` exists (peft matches a name as a suffix of a module path and
    only fails when none matches: a typo beside a valid name would go unnoticed)."""
    targets = cfg.lora_target_modules()
    if targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"lora_targets (--lora-targets): no module named {', '.join(missing)} in this model "
                         f"(its linear layers: {', '.join(linear)})")


def load_policy(model_dir: str | Path, cfg: LoraOptions, seed: int):
    """The model to train from ``model_dir`` (float32): with LoRA adapters when ``cfg.peft`` is lora."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return add_lora(model, cfg, seed) if uses_lora(cfg) else model


def adapters_disabled(model):
    """A context in which ``model`` computes as its base model (peft's ``disable_adapter()``); a no-op
    for a model without adapters."""
    inner = getattr(model, "module", model)
    return inner.disable_adapter() if is_peft_model(inner) else contextlib.nullcontext()


def check_checkpoint(checkpoint: str | None, cfg: LoraOptions) -> None:
    """Refuse to resume a full fine-tuning checkpoint as LoRA, or the other way round."""
    if checkpoint is None:
        return
    holds_adapter = (Path(checkpoint) / "adapter_config.json").is_file()
    if holds_adapter != uses_lora(cfg):
        held, asked = ("LoRA adapters", "--peft none") if holds_adapter else ("full weights", "--peft lora")
        raise ValueError(f"{checkpoint} holds {held} but this run has {asked}: resume with the setting it was "
                         "started with, or use a new output directory")


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def save_merged(trainer, merged_dir: Path, base_dir: str | Path, tokenizer) -> Path:
    """Save the adapters to ``merged_dir.parent / "adapter"`` and the merged model + ``tokenizer`` to
    ``merged_dir``, each atomically (temp dir, then rename; the merged folder last: it marks a finished run).

    The adapters are saved by the Trainer (which gathers them under FSDP); the merge runs on the main
    process: in place on the trained model (no extra copy of the weights), or, under FSDP where each
    rank holds a shard, on the base model loaded again with the saved adapters.
    """
    merged_dir = Path(merged_dir)
    adapter_dir = merged_dir.parent / ADAPTER_DIR
    tmp_adapter = adapter_dir.with_name(f".{ADAPTER_DIR}.tmp")
    trainer.save_model(str(tmp_adapter))
    if trainer.is_world_process_zero():
        _replace_dir(tmp_adapter, adapter_dir)
        if trainer.is_fsdp_enabled:
            from peft import PeftModel
            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
            merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
        else:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        tmp = merged_dir.with_name(f".{merged_dir.name}.tmp")
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, merged_dir)
    trainer.accelerator.wait_for_everyone()
    return merged_dir
