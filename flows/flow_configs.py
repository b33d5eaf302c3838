"""Configs of the ``refresh_dataset`` and ``winrate_report`` flows.

The refresh carries the stages' own configs (``SampleConfig``, ``PairConfig``, ``ChunkConfig``), as the
loop does (``flows.loop_config``); the command line shows their fields as flat options.

Light to import: the CLI builds its options from them without importing Prefect.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from prefwork.flows.loop_config import DATA
from prefwork.flows.options import CarriesConfigs, carried
from prefwork.pipeline.curriculum import ChunkConfig
from prefwork.pipeline.engines_factory import ENGINE_HELP
from prefwork.pipeline.pairs import PairConfig
from prefwork.pipeline.sample import SampleConfig


@dataclass
class RefreshConfig(CarriesConfigs):
    """Turn new prompts into the next version of a preference dataset."""

    workspace: str = field(default="runs", metadata={"help": "workspace: dataset store, content cache, policy"})
    dataset: str = field(default="prefs", metadata={"help": "dataset name in <workspace>/datasets/"})
    prompts: str = field(default=str(DATA / "prompts" / "train.jsonl"), metadata={
        "help": "new prompts: a .jsonl/.parquet file, a directory of them, or hf:NAME for a Hugging Face dataset"})
    hf_split: str = field(default="train", metadata={"help": "split of a Hugging Face prompts dataset"})
    hf_prompt_field: str = field(default="prompt", metadata={"help": "column holding the prompt in a HF dataset"})
    prompts_limit: int = field(default=0, metadata={"help": "use only the first N new prompts (0 = all)"})
    policy: str | None = field(default=None, metadata={"help": "current policy dir (default: the tiny SFT policy)"})
    corpus: str = field(default=str(DATA / "corpus" / "sft.jsonl"),
                        metadata={"help": "SFT corpus of the default policy"})
    engine: str = field(default="auto", metadata={"help": ENGINE_HELP})
    sample: SampleConfig = carried(lambda: SampleConfig(shard_size=64), {
        "n": None, "temperature": None, "max_tokens": None,
        "shard_size": "prompts per sampling/judging shard (the fan-out unit)"})
    seed: int = field(default=0, metadata={"help": "base seed; each shard derives its own from its content"})
    pair: PairConfig = carried(PairConfig, {"min_margin": None, "pairs_per_prompt": None})
    chunk: ChunkConfig = carried(ChunkConfig, {"chunks": "easy-to-hard chunks over the version's pairs",
                                               "curriculum": ("method", None)})
    mode: str = field(default="append", metadata={"help": "append new pairs to the parent's, or replace them"})

    def __post_init__(self):
        """The carried sampling and chunking configs follow the one seed."""
        self.sample = replace(self.sample, seed=self.seed)
        self.chunk = replace(self.chunk, seed=self.seed)


@dataclass
class WinrateConfig:
    """What to compare, where to write; the sampling/judging settings are ``EvalConfig``."""

    model: str = field(default="", metadata={"help": "model directory to evaluate"})
    baseline: str = field(default="reference", metadata={"help": "baseline model directory, or 'reference'"})
    compare: str | None = field(default=None, metadata={"help": "a second model on the same prompts (paired)"})
    prompts: str = field(default=str(DATA / "prompts" / "heldout.jsonl"), metadata={"help": "prompts file"})
    stage: str = field(default="eval", metadata={"help": "stage label in the history"})
    workspace: str = field(default="runs", metadata={"help": "workspace: run dirs, cache, history.parquet"})
    name: str = field(default="winrate", metadata={"help": "run directory name suffix"})
    engine: str = field(default="auto", metadata={"help": ENGINE_HELP})
