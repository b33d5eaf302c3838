"""The loop's typed config (light to import: the CLI builds its options from it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefwork.pipeline import DATA_DIR as DATA
from prefwork.pipeline.engines_factory import ENGINE_HELP

#: Tokens of prompt + answer the tiny default policy trains on; the chunks' difficulty is measured
#: at the same length (the loop's and the refresh's).
MAX_LENGTH = 192


@dataclass
class LoopConfig:
    """The on-policy iterative DPO loop; every default runs on a 2-core CPU in minutes."""

    name: str = field(default="loop", metadata={"help": "run name (suffix of the run directory)"})
    workspace: str = field(default="runs", metadata={"help": "run root: run dirs, content cache, default policy"})
    rounds: int = field(default=2, metadata={"help": "on-policy rounds R"})
    train_prompts: str = field(default=str(DATA / "prompts" / "train.jsonl"), metadata={"help": "training prompts"})
    eval_prompts: str = field(default=str(DATA / "prompts" / "heldout.jsonl"), metadata={"help": "held-out prompts"})
    corpus: str = field(default=str(DATA / "corpus" / "sft.jsonl"), metadata={"help": "SFT corpus of the default policy"})
    policy: str | None = field(default=None, metadata={"help": "starting policy dir (default: build the tiny policy)"})
    engine: str = field(default="auto", metadata={"help": ENGINE_HELP})
    n: int = field(default=16, metadata={"help": "candidates per prompt"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of training candidates"})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per answer"})
    chunks: int = field(default=2, metadata={"help": "sDPO steps T per round"})
    curriculum: str = field(default="logp_margin", metadata={"help": "difficulty: logp_margin, judge_margin, random"})
    schedule: str = field(default="sdpo", metadata={"help": "sdpo (chunk by chunk) or dpo (all pairs at once)"})
    min_margin: float = field(default=0.3, metadata={"help": "drop pairs whose score margin is at most this "
                                                        "(near-ties teach noise)"})
    pairs_per_prompt: int = field(default=3, metadata={"help": "pairs per prompt: the best answer against up to "
                                                             "this many of the worst distinct answers"})
    loss: str = field(default="dpo_sft", metadata={"help": "preference loss (train.losses.LOSSES); dpo_sft = DPO "
                                                     "+ alpha x chosen NLL, which the tiny policy needs (plain dpo "
                                                     "degrades it: see README)"})
    beta: float = field(default=0.3, metadata={"help": "DPO beta"})
    alpha: float = field(default=1.0, metadata={"help": "weight of the chosen NLL term (dpo_sft, slic)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "learning rate of each sDPO step"})
    lr_decay: float = field(default=0.25, metadata={"help": "round r trains at learning_rate x lr_decay^(r-1): "
                                                    "later rounds move the policy less"})
    epochs: float = field(default=1.0, metadata={"help": "epochs over each chunk"})
    batch_size: int = field(default=16, metadata={"help": "pairs per optimizer step"})
    launcher: str = field(default="local", metadata={"help": "where training runs: local (in-process), "
                                                       "accelerate (accelerate launch), command (--launch-command)"})
    num_processes: int = field(default=1, metadata={"help": "training processes for the accelerate launcher"})
    launch_command: str | None = field(default=None, metadata={
        "help": "command template for a GPU host or scheduler, e.g. 'sbatch --wait run.sh {config}'"})
    eval_repeats: int = field(default=8, metadata={"help": "k: repeated evaluations (fresh seeds each)"})
    eval_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of evaluation answers "
                                                                "(the policy as the loop samples it)"})
    eval_prompts_limit: int = field(default=0, metadata={"help": "use only the first N held-out prompts (0 = all)"})
    train_prompts_limit: int = field(default=0, metadata={"help": "use only the first N training prompts (0 = all)"})
    seed: int = field(default=0, metadata={"help": "base seed of sampling and training"})

    def launcher_config(self) -> dict:
        """The ``launcher`` section of the training spec (train.launch)."""
        import torch

        out = {"mode": self.launcher, "num_processes": self.num_processes, "cpu": not torch.cuda.is_available()}
        if self.launch_command:
            out["command"] = self.launch_command
        return out

    def __post_init__(self):
        """Refuse settings that cannot run before any stage starts (not after a round of sampling)."""
        for name in ("rounds", "n", "chunks", "pairs_per_prompt", "eval_repeats", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_rate", "lr_decay", "epochs", "beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    def dpo_config(self, round_: int = 1):
        """The training config of each sDPO step of round ``round_`` (train.dpo.DPOConfig)."""
        from prefwork.train.configs import DPOConfig

        lr = self.learning_rate * self.lr_decay ** (round_ - 1)
        return DPOConfig(loss=self.loss, beta=self.beta, alpha=self.alpha, learning_rate=lr, epochs=self.epochs,
                         batch_size=self.batch_size, seed=self.seed, max_length=MAX_LENGTH, logging_steps=2,
                         save_steps=10, eval_fraction=0.1)
