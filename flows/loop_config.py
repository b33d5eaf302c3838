"""The loop's typed config (light to import: the CLI builds its options from it).

It carries the stages' own configs (``SampleConfig``, ``ChunkConfig``, ``PairConfig``,
``DPOConfig``, ``LauncherConfig``) instead of copying their fields: ``--beta`` lands in
``LoopConfig.train.beta``, and that ``DPOConfig`` travels typed to the training launch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from prefwork.flows.options import CarriesConfigs, carried, option_values
from prefwork.pipeline import DATA_DIR as DATA
from prefwork.pipeline.curriculum import ChunkConfig
from prefwork.pipeline.engines_factory import ENGINE_HELP
from prefwork.pipeline.pairs import PairConfig
from prefwork.pipeline.sample import SampleConfig
from prefwork.train.configs import DPOConfig, LauncherConfig

#: Tokens of prompt + answer the tiny default policy trains on; the chunks' difficulty is measured
#: at the same length (the loop's and the refresh's).
MAX_LENGTH = 192


@dataclass
class LoopConfig(CarriesConfigs):
    """The on-policy iterative DPO loop; every default runs on a 2-core CPU in minutes."""

    name: str = field(default="loop", metadata={"help": "run name (suffix of the run directory)"})
    workspace: str = field(default="runs", metadata={"help": "run root: run dirs, content cache, default policy"})
    rounds: int = field(default=2, metadata={"help": "on-policy rounds R"})
    train_prompts: str = field(default=str(DATA / "prompts" / "train.jsonl"), metadata={"help": "training prompts"})
    eval_prompts: str = field(default=str(DATA / "prompts" / "heldout.jsonl"), metadata={"help": "held-out prompts"})
    corpus: str = field(default=str(DATA / "corpus" / "sft.jsonl"), metadata={"help": "SFT corpus of the default policy"})
    policy: str | None = field(default=None, metadata={"help": "starting policy dir (default: build the tiny policy)"})
    engine: str = field(default="auto", metadata={"help": ENGINE_HELP})
    judge: str = field(default="rules", metadata={
        "help": "judge of training candidates and of the held-out evaluation: rules (slogan/poem checks) or "
                "ifeval (IFEval's verifiable instructions; prompts like data/prompts/ifeval_*.jsonl)",
        "choices": ("rules", "ifeval")})
    sample: SampleConfig = carried(lambda: SampleConfig(n=16), {
        "n": None, "temperature": "sampling temperature of training candidates", "max_tokens": "new tokens per answer",
        "on_long_prompt": None})
    chunk: ChunkConfig = carried(ChunkConfig, {
        "chunks": "sDPO steps T per round", "curriculum": ("method", "difficulty: logp_margin, judge_margin, random")})
    schedule: str = field(default="sdpo", metadata={"help": "sdpo (chunk by chunk) or dpo (all pairs at once)"})
    pair: PairConfig = carried(lambda: PairConfig(min_margin=0.3, pairs_per_prompt=3), {
        "min_margin": "drop pairs whose score margin is at most this (near-ties teach noise)",
        "pairs_per_prompt": "pairs per prompt: the best answer against up to this many of the worst distinct answers"})
    train: DPOConfig = carried(lambda: DPOConfig(loss="dpo_sft", beta=0.3, alpha=1.0, learning_rate=2e-4, batch_size=16,
                                                 max_length=MAX_LENGTH, logging_steps=2, save_steps=10), {
        "loss": "preference loss (train.losses.LOSSES); dpo_sft = DPO + alpha x chosen NLL, which the tiny policy "
                "needs (plain dpo degrades it: see README)",
        "beta": "DPO beta", "alpha": "weight of the chosen NLL term (dpo_sft, slic)",
        "learning_rate": "learning rate of each sDPO step", "epochs": "epochs over each chunk",
        "batch_size": "pairs per optimizer step",
        "max_length": "tokens of prompt + answer trained on (longer pairs are cut); the chunks' difficulty too",
        "peft": None, "lora_r": None, "lora_alpha": None, "lora_dropout": None, "lora_targets": None})
    lr_decay: float = field(default=0.25, metadata={"help": "round r trains at learning_rate x lr_decay^(r-1): "
                                                    "later rounds move the policy less"})
    launch: LauncherConfig = carried(lambda: LauncherConfig(num_processes=1), {
        "launcher": ("mode", "where training runs: local (in-process), accelerate (accelerate launch), "
                             "command (--launch-command)"),
        "num_processes": "training processes for the accelerate launcher",
        "launch_command": ("command", "command template for a GPU host or scheduler, e.g. "
                                      "'sbatch --wait run.sh {config}'")})
    eval_repeats: int = field(default=8, metadata={"help": "k: repeated evaluations (fresh seeds each)"})
    eval_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of evaluation answers "
                                                                "(the policy as the loop samples it)"})
    eval_prompts_limit: int = field(default=0, metadata={"help": "use only the first N held-out prompts (0 = all)"})
    train_prompts_limit: int = field(default=0, metadata={"help": "use only the first N training prompts (0 = all)"})
    seed: int = field(default=0, metadata={"help": "base seed of sampling and training"})

    def __post_init__(self):
        """The carried configs follow the loop's one seed; settings that cannot run are refused before
        any stage starts (not after a round of sampling)."""
        self.train = replace(self.train, seed=self.seed)
        self.chunk = replace(self.chunk, seed=self.seed)
        self.sample = replace(self.sample, seed=self.seed)
        values = option_values(self)
        for name in ("rounds", "n", "chunks", "pairs_per_prompt", "eval_repeats", "batch_size"):
            if values[name] < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {values[name]}")
        for name in ("learning_rate", "lr_decay", "epochs", "beta"):
            if not values[name] > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {values[name]}")

    def dpo_config(self, round_: int = 1) -> DPOConfig:
        """The carried training config for each sDPO step of round ``round_`` (its learning rate decayed)."""
        return replace(self.train, learning_rate=self.train.learning_rate * self.lr_decay ** (round_ - 1))

    def train_sampling(self, round_: int) -> SampleConfig:
        """How round ``round_`` samples its training candidates (a seed of its own per round)."""
        return replace(self.sample, seed=self.seed * 7919 + round_)

    def eval_sampling(self, seed: int) -> SampleConfig:
        """How an evaluation samples: ``eval_repeats`` answers per prompt at ``eval_temperature``."""
        return replace(self.sample, n=self.eval_repeats, temperature=self.eval_temperature, seed=seed)

    def launcher_config(self) -> LauncherConfig:
        """Where training runs (``train.launch``); CPU processes when this machine has no GPU."""
        import torch

        return replace(self.launch, cpu=not torch.cuda.is_available())
