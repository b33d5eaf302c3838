"""How prefwork's flows run unattended: task runners and scheduled deployments.

- ``task_runner(kind, workers)``: threads (default, always there), or Dask / Ray when their
  Prefect integrations (``prefect-dask``, ``prefect-ray``) are installed; sampling and judging
  shards are mapped tasks, so they fan out over whatever the runner offers.
- ``serve(target, ...)``: ``flow.serve`` -- registers a deployment with the Prefect API
  (with a cron or interval schedule and the flow's parameters) and runs a long-lived
  process that executes its scheduled and manually triggered runs. Served runs execute
  the flow object itself (in a subprocess per run), so the chosen task runner comes along.
  Stop it with Ctrl-C; the schedule is paused on shutdown.
"""
from __future__ import annotations

from typing import Any

RUNNERS = ("threads", "dask", "ray")
#: Deployable flows: target name -> (module, flow attribute).
TARGETS = {"refresh": ("prefwork.flows.refresh", "refresh_dataset"), "winrate": ("prefwork.flows.winrate_flow", "winrate_report")}


def task_runner(kind: str = "threads", workers: int | None = None):
    """A Prefect task runner by name; an uninstalled integration is a clear error."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ValueError("task runner 'dask' needs the Prefect Dask integration: "
                             "pip install prefect-dask") from None
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers} if workers else None)
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ValueError("task runner 'ray' needs the Prefect Ray integration: pip install prefect-ray") from None
        return RayTaskRunner(init_kwargs={"num_cpus": workers} if workers else None)
    raise ValueError(f"unknown task runner {kind!r}; valid: {', '.join(RUNNERS)}")


def get_flow(target: str, runner: str = "threads", workers: int | None = None):
    """The target's flow with the chosen task runner."""
    import importlib

    if target not in TARGETS:
        raise ValueError(f"unknown flow {target!r}; valid: {', '.join(TARGETS)}")
    module, attr = TARGETS[target]
    return getattr(importlib.import_module(module), attr).with_options(task_runner=task_runner(runner, workers))


def serve(target: str, *, parameters: dict[str, Any], name: str | None = None, cron: str | None = None,
          interval: float | None = None, runner: str = "threads", workers: int | None = None,
          limit: int | None = None, paused: bool = False) -> None:
    """Serve ``target`` as a deployment on a schedule until interrupted (blocks)."""
    flow = get_flow(target, runner, workers)
    flow.serve(name=name or target, cron=cron, interval=interval, parameters=parameters, limit=limit,
               paused=paused, tags=["prefwork", target],
               description=f"prefwork {target}: {(flow.fn.__doc__ or '').strip().splitlines()[0]}")
