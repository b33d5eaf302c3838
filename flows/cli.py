"""The ``prefwork`` command line: one subcommand per module in ``flows/commands``.

Each command module defines ``NAME``, ``HELP`` and ``register(parser)`` (which sets
``func`` on the parser); options come from the typed config dataclasses
(``flows.options.add_dataclass``), so ``--help`` shows the same help text as the code.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from prefwork.pipeline.schemas import SchemaError

#: Subcommands in the order ``prefwork --help`` lists them.
COMMAND_MODULES = ("loop", "init_policy", "sample", "judge", "pairs", "train", "winrate", "report", "toy",
                   "datasets", "deploy", "serve")

EPILOG = """examples:
  prefwork loop                                 # the default on-policy iterative DPO loop on CPU
  prefwork loop --rounds 3 --name longer        # more rounds, named run directory
  prefwork loop --resume runs/<timestamp>-loop  # continue a killed run; finished stages are reused
  prefwork <command> --help                     # every option, with its default
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep paragraphs of descriptions as written, and show every option's default."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefwork", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Make and measure preference data for LLM alignment: sample on-policy candidates, "
                    "judge them, build (prompt, chosen, rejected) pairs, train with DPO/sDPO, and report "
                    "win rates with their variance.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line that says what to fix)")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        mod = importlib.import_module(f"prefwork.flows.commands.{mod_name}")
        sub = subs.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                              formatter_class=_Formatter)
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, e.g. after the command's own options
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Prefect keeps its database under PREFECT_HOME; ours stays in the workspace (DESIGN.md),
    # and its INFO chatter stays out of the progress bars unless asked for.
    os.environ.setdefault("PREFECT_HOME", os.path.abspath(os.path.join("runs", ".prefect")))
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)  # Prefect makes it without parents
    # A failing flow run logs its traceback at ERROR; the CLI prints the error as one line itself
    # (rule g), so Prefect's own lines show only with --debug.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING" if debug else "CRITICAL")
    # The temporary server needs more than Prefect's default 20 s on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from offline machines
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again (or --resume) to continue",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - rule (g): every error is one line; --debug shows the traceback
        return report_error(exc, debug=args.debug)


#: Errors a user causes and can fix from the message alone (bad input, option, file, server, budget);
#: any other exception is also one line, with its type and a pointer to --debug.
USER_ERRORS = (SchemaError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError,
               ConnectionError, TimeoutError)


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: its message with newlines folded and every credential redacted (rule a)."""
    from prefwork.pipeline.run import redact_text

    text = " ".join(str(exc).split())
    if not text or not isinstance(exc, USER_ERRORS):
        text = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
    return redact_text(text)


def report_error(exc: BaseException, debug: bool = False) -> int:
    """Print ``error: <one line>`` on stderr, however long (the traceback first with ``--debug``,
    redacted too); return exit status 1."""
    from rich.console import Console
    from rich.markup import escape

    from prefwork.pipeline.run import redact_text

    if debug:
        import traceback
        sys.stderr.write(redact_text("".join(traceback.format_exception(exc))))
    Console(stderr=True).print(f"[bold red]error:[/] {escape(error_line(exc))}", highlight=False, soft_wrap=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
