"""The Prefect flow ``winrate_report``: k-repeat win rate of a model against a baseline, and its report.

Thin wiring over ``evaluators.evaluate`` (sampling k answers per prompt with fresh seeds,
judging through ``evaluate_pair``, statistics) and ``evaluators.report_winrate.write_run`` (tables, plots,
report.md, a row per model in ``<workspace>/history.parquet``, and the tables as artifacts in the
Prefect UI), the same two functions ``prefwork winrate`` calls. The evaluation runs behind the
workspace's stage cache (``flows.resume``; key: the prompts' and models' content hashes and the
config): a re-run after a crash in the report reuses it and Prefect shows the task ``Cached``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from prefwork.flows.flow_configs import WinrateConfig
from prefwork.flows.resume import cached, hash_inputs, value_of
from prefwork.pipeline.store import StageCache, content_key


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(workspace: str, prompts: str, models: dict, baseline: str, eval_cfg: dict, engine: str):
    """k repeats of sampling + pairwise judging (``evaluators.evaluate.evaluate``), stage-cached.

    The cache entry keeps the result object pickled (tables and summaries; our own file in the
    workspace, as Prefect's result storage would have kept it); the candidates stay in
    ``.cache/winrate/<key>``, where a killed sampling run resumes from its finished shards.
    """
    import pickle

    from prefwork.evaluators.evaluate import EvalConfig, evaluate, model_label
    from prefwork.pipeline import engines_factory as engines
    from prefwork.pipeline.prompts import load_prompts

    key = content_key("winrate-evaluate", hash_inputs({"prompts": prompts, "models": models, "baseline": baseline}),
                      {**eval_cfg, "engine": engine})
    out = Path(workspace) / ".cache" / "winrate" / key
    name = "reference" if baseline == "reference" else model_label(baseline)

    def produce(work: Path) -> None:
        result = evaluate(load_prompts(prompts), models, baseline, cfg=EvalConfig(**eval_cfg), out_dir=out,
                          engine_for=lambda model_dir: engines.shared_engine(engine, model_dir), baseline_name=name)
        (work / "result.pkl").write_bytes(pickle.dumps(result))

    entry, hit = StageCache(Path(workspace) / ".cache").run("winrate-evaluate", key, produce)
    return cached(pickle.loads((entry / "result.pkl").read_bytes()), hit)


@task(name="report", cache_policy=NO_CACHE)
def report_task(cfg: dict, eval_cfg: dict, result) -> dict:
    """Run directory (judgments, summary, plots, report.md), one history row per model, Prefect artifacts."""
    from prefwork.evaluators.report_winrate import write_run
    from prefwork.pipeline.run import RunDir
    from prefwork.pipeline.store import file_hash

    c = WinrateConfig(**cfg)
    run_dir = RunDir.create(c.workspace, c.name)
    run_dir.write_metadata({**cfg, **eval_cfg}, {"prompts": file_hash(c.prompts)})
    out = write_run(run_dir.path, result, stage=c.stage, config={**cfg, **eval_cfg}, workspace=c.workspace)
    return {"run_dir": str(run_dir.path), "report": str(out["paths"]["report"]),
            "models": {m: {k: v for k, v in s.to_dict().items() if k != "per_repeat"}
                       for m, s in result.summaries.items()}}


@flow(name="winrate_report", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def winrate_report(config: dict, eval_config: dict | None = None) -> dict:
    """Evaluate ``config['model']`` (and ``compare``) against the baseline k times; write the report."""
    from prefwork.evaluators.evaluate import EvalConfig, model_label
    from prefwork.pipeline.engines_factory import resolve_engine

    c = WinrateConfig(**config)
    if not c.model:
        raise ValueError("winrate_report needs config['model'] (a model directory)")
    c.workspace = str(Path(c.workspace).resolve())
    ev = asdict(EvalConfig(**(eval_config or {})))
    models = {model_label(c.model): str(Path(c.model).resolve())}
    if c.compare:
        models[model_label(c.compare) if model_label(c.compare) not in models else "compare"] = \
            str(Path(c.compare).resolve())
    baseline = c.baseline if c.baseline == "reference" else str(Path(c.baseline).resolve())
    result = value_of(evaluate_task(c.workspace, str(Path(c.prompts).resolve()), models, baseline, ev,
                                    resolve_engine(c.engine)))
    return report_task(asdict(c), ev, result)
