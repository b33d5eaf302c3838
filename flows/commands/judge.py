"""``prefwork judge``: score candidates with any registered judge, or audit a judge.

    prefwork judge --judge math_1to5 --in candidates.parquet --out scores.parquet --base-url URL --model NAME
    prefwork judge --judge pairwise --in model.parquet --baseline sft.parquet --out judgments.parquet
    prefwork judge audit --judge pairwise --pairs data/judges/pairwise/gold.jsonl --repeats 2

Answers are cached in SQLite (``--cache``): a re-run sends no requests and a killed run resumes.
Each invocation writes a run directory (resolved config without keys, usage.json with tokens and cost
per judge, and the audit's tables). ``--max-cost`` stops cleanly: rows not judged keep
``error = "not judged: max cost reached"`` and the command exits with status 3.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from prefwork.flows.options import add_dataclass, from_args
from prefwork.flows.outcome import Outcome, add_outcome_options
from prefwork.evaluators.llm_client import ClientOptions

NAME = "judge"
HELP = "score candidates with a judge (LLM rubric, rules, combined) or audit a judge"
DESCRIPTION = __doc__
BUDGET_EXIT = 3


def register(parser) -> None:
    parser.add_argument("action", nargs="?", choices=("score", "audit"), default="score",
                        help="score (default): judge a candidates file; audit: measure the judge itself")
    from prefwork.evaluators.registry import judge_names
    parser.add_argument("--judge", required=True,
                        help=f"judge name ({', '.join(judge_names())}), a judge directory, or a weighted list "
                             "like 'math_1to5:0.7,rules:0.3'")
    parser.add_argument("--in", dest="inp", default=None, help="candidates Parquet file (score)")
    parser.add_argument("--out", default=None, help="scores Parquet file to write (judgments for a pairwise judge)")
    parser.add_argument("--baseline", default=None, help="baseline candidates (pairwise judge): model = --in")
    parser.add_argument("--model", default=None, help="served judge model (default: the judge config's; "
                                                      "'' = the server's first model)")
    parser.add_argument("--structured", default=None, choices=("vllm", "openai", "none"),
                        help="structured output mode (default: the judge config's)")
    parser.add_argument("--listwise", action="store_true", help="best/worst over each prompt's N answers in one call")
    parser.add_argument("--orders", default=None, choices=("both", "random"),
                        help="pairwise: judge both orders (disagreement = tie) or one seeded random order")
    parser.add_argument("--rule-cap", type=float, default=None,
                        help="combined judges: cap the 0-1 score at this value when any rule failed")
    parser.add_argument("--repeat", type=int, default=0, help="repeat index (its own seed and cache entries)")
    parser.add_argument("--cache", default=os.path.join("runs", ".cache", "judges.sqlite"),
                        help="SQLite answer cache ('' = none)")
    parser.add_argument("--runs", default="runs", help="where run directories go")
    parser.add_argument("--run-dir", default=None, help="write this run's records here (default: runs/<time>-judge)")
    parser.add_argument("--pairs", default=None, help="audit: pairs file (.jsonl/.parquet: prompt, a, b, [label, task, meta])")
    parser.add_argument("--gold", default=None, help="audit: hand-graded answers (prompt, answer, grade); "
                                                     "default: the judge's shipped gold set")
    parser.add_argument("--repeats", type=int, default=1, help="audit: calls per pair (>= 2 measures self-consistency)")
    add_dataclass(parser, ClientOptions)
    add_outcome_options(parser)
    parser.set_defaults(func=run)


def _session(args):
    from prefwork.evaluators.session import JudgeSession
    return JudgeSession(from_args(ClientOptions, args), cache=args.cache or None, model=args.model,
                        structured=args.structured, listwise=args.listwise, orders=args.orders,
                        rule_cap=args.rule_cap)


def _run_dir(args, name: str):
    from prefwork.pipeline.run import RunDir
    rd = RunDir(args.run_dir) if args.run_dir else RunDir.create(args.runs, name)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    inputs = {}
    for key in ("inp", "baseline", "pairs", "gold"):
        if config.get(key) and Path(config[key]).is_file():
            from prefwork.pipeline.store import file_hash
            inputs[key] = file_hash(config[key])
    rd.write_metadata(config, inputs)
    return rd


def _usage_table(console, usage: dict) -> None:
    from rich.table import Table
    t = Table(title="judge usage")
    for col in ("judge", "requests", "cached", "retries", "failures", "tokens", "cost (USD)"):
        t.add_column(col, justify="left" if col == "judge" else "right")
    for name, u in usage["judges"].items():
        t.add_row(name, str(u["requests"]), str(u["cached"]), str(u["retries"]), str(u["failures"]),
                  str(u["total_tokens"]), f"{u['cost_usd']:.4f}")
    console.print(t)


def run(args) -> int:
    from rich.console import Console
    from prefwork.evaluators.registry import get_spec

    console = Console(stderr=True)
    get_spec(args.judge)  # an unknown judge fails first, listing the valid names
    if args.action == "audit":
        return run_audit(args, console)
    if not args.inp or not args.out:
        raise ValueError("prefwork judge needs --in CANDIDATES and --out FILE (or `judge audit`)")
    from prefwork.evaluators.evaluate import evaluate_pair  # import errors surface before the run dir exists
    from prefwork.pipeline.schemas import CANDIDATES, JUDGMENTS, SCORES
    from prefwork.pipeline.store import read_table, write_output

    cands = read_table(args.inp, CANDIDATES)
    rd = _run_dir(args, "judge")
    with _session(args) as s:
        spec = s.spec(args.judge)
        if spec.kind == "pairwise":
            if not args.baseline:
                raise ValueError(f"judge {args.judge!r} is pairwise: give --baseline CANDIDATES (model = --in)")
            out = evaluate_pair(cands, read_table(args.baseline, CANDIDATES), s.judge(args.judge))
            contract, unit = JUDGMENTS, "judgments"
            decided = out.filter(out["preference"].is_not_null())
            summary = {"judgments": out.height, "failed": out.height - decided.height,
                       "win_rate": float(decided["preference"].mean()) if decided.height else None}
        else:
            out = s.score(args.judge, cands, repeat=args.repeat)
            contract, unit = SCORES, "rows"
            ok = out.filter(out["error"].is_null())
            summary = {"rows": out.height, "scored": ok.height, "errors": out.height - ok.height,
                       "mean_score": float(ok["score"].mean()) if ok.height else None}
        usage = s.usage()
        s.write_usage(rd.path)
        rd.log_metric(stage="judge", judge=args.judge, out=str(args.out), **summary, usage=usage["total"])
    errors = out.filter(out["error"].is_not_null())["error"]
    outcome = Outcome(unit, out.height, errors.len(), first_error=errors[0] if errors.len() else None,
                      where=f"the error column of {args.out}")
    if not usage["stopped_by_budget"]:  # a budget stop is its own ending (exit 3), not a failure
        outcome.check_not_all_failed(f"{args.out} not written")
    write_output(out, args.out, contract, allow_empty=args.allow_empty)
    _usage_table(console, usage)
    console.print(f"wrote {args.out}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in summary.items()) + f"; run dir {rd.path}",
                  highlight=False)
    if usage["stopped_by_budget"]:
        console.print(f"[bold yellow]stopped:[/] --max-cost {args.max_cost} reached; rows not judged are marked "
                      "in the error column. Run again with a higher budget: cached answers are reused.")
        return BUDGET_EXIT
    return outcome.finish(console, args.strict)


def run_audit(args, console) -> int:
    from rich.table import Table

    from prefwork.evaluators.audit import load_pairs, load_table, run_audit as audit
    from prefwork.pipeline.store import write_json, write_table

    with _session(args) as s:
        spec = s.spec(args.judge)
        pairs = load_pairs(args.pairs) if args.pairs else None
        gold_path = args.gold or (str(spec.gold) if spec.gold and not args.pairs else None)
        if gold_path and spec.kind == "pairwise" and not args.pairs:
            pairs, gold_path = load_pairs(gold_path), None  # a pairwise judge's gold set is labelled pairs
        gold = load_table(gold_path) if gold_path else None
        if pairs is None and gold is None:
            raise ValueError(f"judge audit needs --pairs or --gold (judge {args.judge!r} ships no gold set)")
        rd = _run_dir(args, "judge-audit")
        results = audit(s, args.judge, pairs=pairs, gold=gold, repeats=max(1, args.repeats))
        usage = s.usage()
        s.write_usage(rd.path)
    report = {k: m for k, (m, _) in results.items()}
    write_json(rd.path / "audit.json", report)
    for k, (_, table) in results.items():
        write_table(table, rd.path / f"audit_{k}.parquet")
    t = Table(title=f"judge audit: {args.judge}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("note")
    notes = {"position_consistency": "same verdict in both orders", "length_bias": "decided pairs won by the longer answer",
             "self_consistency": "same verdict on every repeat", "label_agreement": "final verdict = label",
             "rule_agreement": "verdict = rule judge's", "first_position_win_rate": "single-order calls won by the first",
             "exact_agreement": "score = gold grade", "within_one": "|score - grade| <= 1",
             "correct_agreement": "agree on score >= threshold",
             "label_agreement_constant": "the same verdict for every pair would get",
             "correct_agreement_constant": "the same grade for every answer would get",
             "verdicts": "final verdicts given (1 = a, 0 = b, 0.5 = tie)", "scores": "grades given"}
    for part, m in report.items():
        for k, v in m.items():
            if k in ("judge", "model", "kind"):
                continue
            shown = ("n/a" if v is None else f"{v:.3f}" if isinstance(v, float)
                     else ", ".join(f"{a}: {n}" for a, n in v.items()) if isinstance(v, dict) else str(v))
            t.add_row(f"{part}: {k}", shown, notes.get(k, ""))
    console.print(t)
    from rich.console import Console
    with open(rd.path / "audit.txt", "w") as fh:
        Console(file=fh, width=110).print(t)
    console.print(f"audit saved in {rd.path} (audit.json, audit.txt, audit_*.parquet)", highlight=False)
    rd.log_metric(stage="judge_audit", judge=args.judge, **{k: json.dumps(v) for k, v in report.items()},
                  usage=usage["total"])
    return 0
