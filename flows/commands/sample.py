"""``prefwork sample``: N candidates per prompt through vllm, transformers or an OpenAI-compatible server.

Thin wiring: load the prompts, build the engine (``pipeline.engines_factory``), run
``pipeline.sample.sample`` (resumable shards) under a rich progress bar that shows
prompts/s and tokens/s for the work done in this run (resumed shards do not count).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prefwork.flows.options import add_dataclass, from_args
from prefwork.flows.outcome import CommandFailed, Outcome, add_outcome_options
from prefwork.pipeline.engines_factory import ENGINE_HELP, ENGINES, EngineOptions, make_engine, resolve_engine
from prefwork.pipeline.sample import SampleConfig

NAME = "sample"
HELP = "sample N candidates per prompt (vllm, transformers or an OpenAI-compatible server)"
DESCRIPTION = HELP + (". A killed run restarted with the same arguments skips finished shards. "
                      "The openai engine reads its key from $OPENAI_API_KEY (see --api-key-env).")


class SampleProgress:
    """A rich progress bar for ``sample(progress=...)``: prompts done, prompts/s, tokens/s."""

    def __init__(self, total: int, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                            disable=os.environ.get("PREFWORK_PROGRESS", "1") != "1")
        self.task = self.bar.add_task("sample", total=total, rate="")
        self.start = time.perf_counter()
        self.prompts = self.tokens = self.resumed_prompts = 0

    def __enter__(self):
        self.bar.start()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, prompts: int, tokens: int) -> None:
        self.prompts += prompts
        self.tokens += tokens
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=prompts,
                        rate=f"{self.prompts / dt:.1f} prompts/s  {self.tokens / dt:.0f} tokens/s")

    def resumed(self, prompts: int, tokens: int) -> None:
        """A shard finished by an earlier run: advance the bar, keep it out of the rates."""
        self.resumed_prompts += prompts
        self.bar.update(self.task, advance=prompts)


def register(parser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help=ENGINE_HELP)
    parser.add_argument("--model", required=True,
                        help="vllm, transformers: a model folder, a .gguf file, an alias (smollm2-135m-instruct) or "
                             "a hub id org/name; openai: the served model name ('' = the server's first)")
    parser.add_argument("--prompts", required=True, help="prompts file (.jsonl or .parquet)")
    parser.add_argument("--out", required=True, help="candidates Parquet file to write")
    parser.add_argument("--model-name", default=None, help="the `model` column (default: --model)")
    add_dataclass(parser, SampleConfig)
    add_dataclass(parser, EngineOptions)
    add_outcome_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from prefwork.pipeline.engines_openai import EngineError
    from prefwork.pipeline.prompts import load_prompts
    from prefwork.pipeline.sample import sample

    console = Console(stderr=True)
    cfg = from_args(SampleConfig, args)
    prompts = load_prompts(args.prompts)  # before the engine starts: bad input fails fast
    engine_name = resolve_engine(args.engine)
    opts = vars(from_args(EngineOptions, args))
    engine = make_engine(engine_name, args.model or None, **opts)
    model_name = args.model_name or args.model or getattr(engine, "model", "")
    console.print(f"sampling {prompts.height} prompts x {cfg.n} with [bold]{engine_name}[/] from {model_name}",
                  highlight=False)
    out = Path(args.out)
    try:
        with SampleProgress(prompts.height, console) as bar:
            sample(prompts, engine, out, cfg, model_name, progress=bar, source=args.prompts,
                   allow_empty=args.allow_empty)
    except EngineError as exc:
        raise CommandFailed(f"{exc}; finished shards are kept under {out}.shards/: run the same command "
                            "again to continue") from None
    skipped = out.with_suffix(".skipped.json")
    skips = json.loads(skipped.read_text()) if skipped.exists() else []
    note = f"; skipped prompts listed in {skipped}" if skips else ""
    console.print(f"wrote {out} ({bar.prompts + bar.resumed_prompts} prompts, {bar.resumed_prompts} resumed "
                  f"from earlier shards, {bar.tokens} new tokens){note}", highlight=False, soft_wrap=True)
    return Outcome("prompts", prompts.height, len(skips), verb="skipped", where=str(skipped),
                   first_error=skips[0]["reason"] if skips else None).finish(console, args.strict)
