"""Training configs: typed dataclasses with help text, free of torch imports.

They live apart from the trainers so the CLI can build its options (and ``--help``) without
importing torch and transformers; ``train.dpo`` and ``train.sft`` re-export them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from prefwork.pipeline.checks import check_fields

#: Parameter-efficient methods of ``--peft`` (``train.lora``); "none" trains every weight.
PEFT_METHODS = ("none", "lora")


@dataclass
class LoraOptions:
    """LoRA adapters (peft): the fields DPOConfig and SFTConfig share, declared once here.

    With ``peft: lora`` the base weights stay frozen and only low-rank adapters train
    (``train.lora``); the reference of a DPO run is the same model with its adapters disabled,
    and the run saves the adapters plus a merged model folder that vLLM and transformers load.
    """

    peft: str = field(default="none", metadata={
        "help": "none: train every weight; lora: train LoRA adapters on a frozen base (less memory; the DPO "
                "reference is the base, adapters disabled; final/ holds the merged model)",
        "choices": PEFT_METHODS})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r of each adapter", "min": 1})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scale alpha (the update is scaled by alpha / r)",
                                                      "above": 0.0})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the adapters' input", "min": 0.0,
                                                        "max": 0.5})
    lora_targets: str = field(default="all-linear", metadata={
        "help": "modules that get adapters: comma-separated names (q_proj,k_proj,v_proj,o_proj) or all-linear "
                "(every linear layer but the LM head)"})

    def lora_target_modules(self) -> str | list[str]:
        """``lora_targets`` as peft's ``target_modules``: "all-linear" or a list of module names."""
        names = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        if not names:
            raise ValueError("lora_targets (--lora-targets) must name at least one module, or all-linear")
        return "all-linear" if names == ["all-linear"] else names


@dataclass
class DPOConfig(LoraOptions):
    """Everything that shapes a preference-training run; defaults suit a tiny Llama on CPU."""

    loss: str = field(default="dpo", metadata={"help": "loss name from train.losses.LOSSES"})
    beta: float = field(default=0.1, metadata={"help": "KL strength β (IPO: its τ)", "above": 0.0})
    label_smoothing: float = field(default=0.0, metadata={"help": "cDPO label smoothing ε (dpo, dpo_sft)",
                                                          "min": 0.0, "max": 0.5})
    delta: float = field(default=1.0, metadata={"help": "SLiC margin δ"})
    alpha: float = field(default=0.1, metadata={"help": "weight of the chosen NLL term (slic, dpo_sft)"})
    beta_chosen: float | None = field(default=None, metadata={"help": "flex_dpo β of the chosen term (None: beta)"})
    beta_rejected: float | None = field(default=None, metadata={"help": "flex_dpo β of the rejected term (None: beta)"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate", "above": 0.0})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs", "above": 0.0})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; overrides epochs when > 0", "min": -1})
    batch_size: int = field(default=8, metadata={"help": "pairs per device per micro-batch", "min": 1})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step", "min": 1})
    max_length: int = field(default=256, metadata={"help": "max tokens of prompt + answer (truncated beyond)",
                                                   "min": 2})
    seed: int = field(default=0, metadata={"help": "seed of init order, shuffling and the eval split"})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name"})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "transformers LR schedule"})
    warmup_steps: float = field(default=0, metadata={"help": "warm-up steps (a float < 1: fraction of all steps)",
                                                     "min": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay", "min": 0.0})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm", "min": 0.0})
    logging_steps: int = field(default=5, metadata={"help": "optimizer steps per metrics.jsonl line", "min": 1})
    save_steps: int = field(default=50, metadata={"help": "optimizer steps between checkpoints", "min": 1})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept under out_dir", "min": 1})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of pairs held out for eval reward accuracy",
                                                        "min": 0.0, "max": 0.9})
    share_prompt: bool = field(default=True, metadata={
        "help": "score chosen and rejected in one [prompt|chosen|rejected] row with a 4D mask, so the prompt "
                "runs once (needs sdpa or eager attention; False: the 2B-row concatenated batch)"})
    reference_batch_size: int = field(default=16, metadata={"help": "pairs per batch of the reference pass", "min": 1})
    monitor_ratio: float = field(default=3.0, metadata={
        "help": "3D watch: warn when chosen log-lik falls and rejected falls this many times faster"})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for activation memory"})

    def __post_init__(self):
        check_fields(self)  # bounds in the metadata (pipeline.checks), for a config file as for the flags
        self.lora_target_modules()

    def loss_options(self) -> dict:
        """Keyword options passed to the loss function."""
        return {"label_smoothing": self.label_smoothing, "delta": self.delta, "alpha": self.alpha,
                "beta_chosen": self.beta_chosen, "beta_rejected": self.beta_rejected}


@dataclass
class SFTConfig(LoraOptions):
    """Supervised fine-tuning settings (defaults suit the tiny policy on 2 CPU cores)."""

    learning_rate: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW, cosine decay)",
                                                         "above": 0.0})
    epochs: float = field(default=12.0, metadata={"help": "passes over the records (at 12 the tiny policy copies "
                                                    "quoted words and titles from the prompt; at 8 a corpus "
                                                    "draft's policy used a required word 7% of the time: README)",
                                                    "above": 0.0})
    batch_size: int = field(default=32, metadata={"help": "sequences per optimizer step", "min": 1})
    max_length: int = field(default=160, metadata={"help": "truncate prompt+response to this many tokens", "min": 2})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up",
                                                        "min": 0.0, "max": 1.0})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay", "min": 0.0})
    seed: int = field(default=0, metadata={"help": "seed of data order and dropout"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})

    def __post_init__(self):
        check_fields(self)
        self.lora_target_modules()


@dataclass
class LauncherConfig:
    """How the training run is started: in this process, ``accelerate launch``, or a command template."""

    mode: str = field(default="local", metadata={"help": "local (in-process), accelerate, or command (template)"})
    num_processes: int | None = field(default=None, metadata={
        "help": "accelerate --num_processes (None: the accelerate config file's)"})
    cpu: bool = field(default=False, metadata={"help": "train on CPU processes (gloo) instead of GPUs"})
    accelerate_config: str | None = field(default=None, metadata={"help": "accelerate --config_file (e.g. FSDP)"})
    mixed_precision: str | None = field(default=None, metadata={"help": "accelerate --mixed_precision (no, bf16, fp16)"})
    extra_args: list[str] = field(default_factory=list, metadata={"help": "more `accelerate launch` arguments"})
    command: str | None = field(default=None, metadata={
        "help": "mode=command: shell template with {accelerate} {entry} {config} {run_dir} {python} {log} "
                "{num_processes}, e.g. 'sbatch --wait --gpus=8 --wrap \"{accelerate}\"'"})
    env: dict[str, str] = field(default_factory=dict, metadata={"help": "extra environment of the launched command"})
