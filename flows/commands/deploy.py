"""``prefwork deploy``: serve a flow on a schedule with ``flow.serve`` (a Prefect deployment)."""
from __future__ import annotations

import argparse
from dataclasses import asdict

from prefwork.flows.options import add_dataclass, from_args
from prefwork.flows.flow_configs import RefreshConfig

NAME = "deploy"
HELP = "serve a flow (refresh, winrate) on a cron/interval schedule as a Prefect deployment"
DESCRIPTION = """Register a Prefect deployment for a flow and serve it: this process stays up,
runs the deployment's scheduled runs and any run triggered from the Prefect UI, the CLI
(`prefect deployment run 'refresh_dataset/nightly'`) or the API. Ctrl-C stops it and pauses
the schedule. Point PREFECT_API_URL at a running `prefect server start` to see the
deployment and its runs in the UI (docs/prefect.md walks through it).

examples:
  prefwork deploy refresh --cron "0 2 * * *" --prompts incoming/ --deployment nightly
  prefwork deploy winrate --interval 86400 --model runs/.cache/train/<key>/model --baseline reference"""


def _common(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--deployment", default=default_name, help="deployment name (runs show as FLOW/DEPLOYMENT)")
    p.add_argument("--cron", default=None, help='cron schedule, e.g. "0 2 * * *" (02:00 every day)')
    p.add_argument("--interval", type=float, default=None, help="schedule every N seconds instead of cron")
    p.add_argument("--paused", action="store_true", help="register the schedule paused (runs only when triggered)")
    p.add_argument("--runner", default="threads", help="task runner: threads, dask, ray (when installed)")
    p.add_argument("--workers", type=int, default=None, help="task runner workers")
    p.add_argument("--limit", type=int, default=1, help="at most this many concurrent runs of this server")


def register(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="deploy_target", metavar="FLOW")
    p = subs.add_parser("refresh", help="serve refresh_dataset", formatter_class=parser.formatter_class)
    _common(p, "nightly")
    add_dataclass(p, RefreshConfig)
    p.set_defaults(func=run)
    p = subs.add_parser("winrate", help="serve winrate_report", formatter_class=parser.formatter_class)
    _common(p, "winrate")
    from prefwork.evaluators.evaluate import EvalConfig
    from prefwork.flows.flow_configs import WinrateConfig
    add_dataclass(p, WinrateConfig)
    add_dataclass(p, EvalConfig)
    p.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


PATH_FIELDS = ("workspace", "prompts", "policy", "corpus", "model", "compare", "baseline")


def _absolute(cfg: dict) -> dict:
    """Paths made absolute: served runs must not depend on the server's working directory."""
    import os

    out = dict(cfg)
    for key in PATH_FIELDS:
        value = out.get(key)
        if value and not str(value).startswith("hf:") and value != "reference":
            out[key] = os.path.abspath(value)
    return out


def parameters(args: argparse.Namespace) -> dict:
    """The deployment's default parameters from the parsed options."""
    if args.deploy_target == "refresh":
        return {"config": _absolute(asdict(from_args(RefreshConfig, args)))}
    from prefwork.evaluators.evaluate import EvalConfig
    from prefwork.flows.flow_configs import WinrateConfig
    return {"config": _absolute(asdict(from_args(WinrateConfig, args))),
            "eval_config": asdict(from_args(EvalConfig, args))}


def run(args: argparse.Namespace) -> int:
    from prefwork.flows.deploy import serve

    if args.cron and args.interval:
        raise ValueError("give --cron or --interval, not both")
    serve(args.deploy_target, parameters=parameters(args), name=args.deployment, cron=args.cron,
          interval=args.interval, runner=args.runner, workers=args.workers, limit=args.limit, paused=args.paused)
    return 0
