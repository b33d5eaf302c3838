"""What a preference run leaves behind: the 3D-properties watch, metrics.jsonl, final/.

``metrics.jsonl`` is read back with ``pipeline.run.read_metrics``, the one reader of both
the trainer's and a run directory's metrics.

The watch follows "3D-Properties" (PAPERS.md): under DPO the rejected likelihood can drop
drastically while the chosen one stops rising and falls (degradation). Per logging window
it reports the change of mean chosen and rejected log-likelihood since the start of the
run, measured as policy - reference on the window's own pairs (the reference *is* the
starting model), and warns when both fall with the rejected one falling much faster.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)


@dataclass
class LikelihoodMonitor:
    """Flags the "drastic drop / degradation" signature per logging window.

    ``ratio``: warn when the chosen log-likelihood falls and the rejected one falls more
    than ``ratio`` times as fast. Without a reference (reference-free losses) the change is
    measured against the first window instead of the starting model.
    """

    ratio: float = 3.0
    has_reference: bool = True
    _start: tuple[float, float] | None = None

    def update(self, chosen_shift: float, rejected_shift: float, step: int = 0) -> dict[str, float]:
        """``*_shift``: window means of policy - reference summed log-probs (per pair).

        Returns the metrics to log: ``3d/chosen_logps_change``, ``3d/rejected_logps_change``
        and ``3d/degradation`` (1.0 when the signature is present).
        """
        if not self.has_reference:
            self._start = self._start or (chosen_shift, rejected_shift)
            chosen_shift, rejected_shift = chosen_shift - self._start[0], rejected_shift - self._start[1]
        degraded = chosen_shift < 0 and rejected_shift < self.ratio * chosen_shift
        if degraded:
            log.warning(
                "3D-properties: drastic drop / degradation at step %d: mean rejected log-likelihood changed by "
                "%.3f while the chosen one fell too, by %.3f (rejected falls %.1fx faster; threshold %.1fx)",
                step, rejected_shift, chosen_shift, rejected_shift / chosen_shift, self.ratio)
        return {"3d/chosen_logps_change": chosen_shift, "3d/rejected_logps_change": rejected_shift,
                "3d/degradation": float(degraded)}


class MetricsFile(TrainerCallback):
    """Appends one JSON line per training log window to ``path`` (main process only).

    On resume, lines from steps after the checkpoint are dropped: they will be logged again.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= state.global_step]
        if len(kept) != len(lines):
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def save_final(trainer, final_dir: Path) -> Path:
    """Save model + tokenizer to ``final_dir`` atomically (temp dir, then rename).

    A complete ``final/`` is what marks a finished run (sDPO skips such steps on resume).
    """
    final_dir = Path(final_dir)
    tmp = final_dir.with_name(f".{final_dir.name}.tmp")
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(tmp))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp, final_dir)
    trainer.accelerator.wait_for_everyone()
    return final_dir
