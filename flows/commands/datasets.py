"""``prefwork datasets``: refresh, list, show, diff and push the versioned preference datasets."""
from __future__ import annotations

import argparse

from prefwork.flows.options import add_dataclass, from_args
from prefwork.flows.flow_configs import RefreshConfig

NAME = "datasets"
HELP = "versioned preference datasets: refresh (new prompts -> new version), list, show, diff, push"
DESCRIPTION = """Versioned preference datasets in <workspace>/datasets/<name>/vNNNN/.

Each version is immutable: pairs.parquet (polars, or datasets.load_dataset("parquet", ...)),
hf/ (datasets.load_from_disk), and manifest.json (content hash, parent, mode, config, row
counts, judge and policy). `refresh` runs the Prefect flow refresh_dataset once: prompts no
version holds yet are sampled with the current policy, judged, paired, chunked and published
as the next version (appended to the parent's pairs, or replacing them with --mode replace).

examples:
  prefwork datasets refresh --prompts new_prompts/ --policy runs/.cache/train/<key>/model
  prefwork datasets list
  prefwork datasets show latest --limit 5
  prefwork datasets diff v0001 v0002
  prefwork datasets push v0002 me/my-prefs   # needs network and a Hugging Face token"""


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", default="runs", help="workspace holding datasets/")
    p.add_argument("--dataset", default="prefs", help="dataset name")


def register(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="datasets_command", metavar="ACTION")
    p = subs.add_parser("refresh", help="run the refresh_dataset flow once", formatter_class=parser.formatter_class)
    p.add_argument("--runner", default="threads", help="task runner: threads, dask, ray (when installed)")
    p.add_argument("--workers", type=int, default=None, help="task runner workers (default: the runner's)")
    add_dataclass(p, RefreshConfig)
    p.set_defaults(func=refresh)
    p = subs.add_parser("list", help="versions with parent, mode, row counts, policy",
                        formatter_class=parser.formatter_class)
    _store_args(p)
    p.set_defaults(func=list_versions)
    p = subs.add_parser("show", help="a version's manifest and pairs, chosen beside rejected",
                        formatter_class=parser.formatter_class)
    _store_args(p)
    p.add_argument("version", nargs="?", default="latest", help="vNNNN, N, latest, or a content-hash prefix")
    p.add_argument("--limit", type=int, default=10, help="pairs to print")
    p.add_argument("--new", action="store_true", help="only pairs this version added")
    p.set_defaults(func=show)
    p = subs.add_parser("diff", help="pairs added and removed between two versions",
                        formatter_class=parser.formatter_class)
    _store_args(p)
    p.add_argument("a", help="older version")
    p.add_argument("b", nargs="?", default="latest", help="newer version")
    p.add_argument("--limit", type=int, default=5, help="added/removed pairs to print")
    p.set_defaults(func=diff)
    p = subs.add_parser("push", help="upload a version to the Hugging Face Hub (network + token)",
                        formatter_class=parser.formatter_class)
    _store_args(p)
    p.add_argument("version", help="version to upload")
    p.add_argument("repo_id", help="Hub dataset repository, e.g. me/my-prefs")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.set_defaults(func=push)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _cut(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def refresh(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console

    from prefwork.flows.deploy import get_flow

    cfg = from_args(RefreshConfig, args)
    if not cfg.prompts.startswith("hf:"):  # a bad prompts file fails in one line before Prefect starts
        from prefwork.pipeline.datasets_store import load_prompt_source
        load_prompt_source(cfg.prompts)
    out = get_flow("refresh", args.runner, args.workers)(config=asdict(cfg))
    console = Console()
    if out.get("published"):
        console.print(f"published [bold]{out['published']}[/] ({out['new_pairs']} new pairs from "
                      f"{out['new_prompts']} new prompts; {out['pairs']} pairs in all): {out['path']}")
    else:
        console.print(f"nothing to publish: {out.get('reason')} ({out['source_prompts']} prompts, all held)")
    return 0


def list_versions(args: argparse.Namespace) -> int:
    from rich.table import Table

    from prefwork.flows.progress import table_console
    from prefwork.pipeline.datasets_store import DatasetStore

    store = DatasetStore(args.workspace, args.dataset)
    table = Table(title=f"dataset {args.dataset} ({store.root})")
    for col in ("version", "created", "parent", "mode", "pairs", "new pairs", "prompts", "judge", "policy", "hash"):
        table.add_column(col)
    for v in store.versions():
        m = v.manifest
        table.add_row(v.name, m["created"], m["parent"] or "-", m["mode"], str(m["rows"]["pairs"]),
                      str(m["rows"]["new_pairs"]), str(m["rows"]["prompts"]), m["judge"],
                      (m["policy"].get("sha256") or "")[:12], m["content_hash"][:12])
    table_console().print(table if table.row_count else f"dataset {args.dataset!r} has no versions in {store.root}")
    return 0


def show(args: argparse.Namespace) -> int:
    import json

    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from prefwork.pipeline.datasets_store import DatasetStore

    v = DatasetStore(args.workspace, args.dataset).get(args.version)
    m = v.manifest
    console = Console()
    console.print(f"[bold]{args.dataset} {v.name}[/]  parent={m['parent'] or '-'}  mode={m['mode']}  "
                  f"hash={m['content_hash'][:16]}  judge={m['judge']}  policy={m['policy'].get('path', '-')}")
    console.print(f"rows: {json.dumps(m['rows'])}\nfiles: {v.path}/pairs.parquet, {v.path}/hf", highlight=False)
    pairs = v.pairs()
    if args.new:
        pairs = pairs.filter(pl.col("added_in") == v.name)
    table = Table(title=f"{min(args.limit, pairs.height)} of {pairs.height} pairs", show_lines=True)
    table.add_column("prompt", ratio=2)
    table.add_column("chosen", ratio=3, style="green")
    table.add_column("score", justify="right")
    table.add_column("rejected", ratio=3, style="red")
    table.add_column("score", justify="right")
    table.add_column("chunk", justify="right")
    for r in pairs.head(args.limit).iter_rows(named=True):
        table.add_row(_cut(r["prompt"], 100), _cut(r["chosen"]), f"{r['chosen_score']:.2f}", _cut(r["rejected"]),
                      f"{r['rejected_score']:.2f}", str(r.get("chunk", "-")))
    console.print(table)
    return 0


def diff(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from prefwork.pipeline.datasets_store import DatasetStore, diff as diff_versions

    store = DatasetStore(args.workspace, args.dataset)
    d = diff_versions(store.get(args.a), store.get(args.b))
    console = Console()
    console.print(f"[bold]{d['a']} -> {d['b']}[/]: {d['pairs_a']} -> {d['pairs_b']} pairs; "
                  f"[green]+{d['added'].height}[/] added, [red]-{d['removed'].height}[/] removed, {d['common']} kept; "
                  f"policy {'changed' if d['policy_changed'] else 'same'}")
    for key, (old, new) in d["config_changes"].items():
        console.print(f"  config {key}: {old!r} -> {new!r}", highlight=False)
    for label, frame, style in (("added", d["added"], "green"), ("removed", d["removed"], "red")):
        if frame.height:
            table = Table(title=f"{label} ({frame.height})", title_style=style)
            for col in ("prompt", "chosen", "rejected", "margin"):
                table.add_column(col)
            for r in frame.head(args.limit).iter_rows(named=True):
                table.add_row(_cut(r["prompt"], 80), _cut(r["chosen"], 100), _cut(r["rejected"], 100),
                              f"{r['margin']:.2f}")
            console.print(table)
    return 0


def push(args: argparse.Namespace) -> int:
    from prefwork.pipeline.datasets_store import DatasetStore, push_to_hub

    url = push_to_hub(DatasetStore(args.workspace, args.dataset).get(args.version), args.repo_id,
                      private=args.private)
    print(f"pushed {args.version} to {url}")
    return 0
