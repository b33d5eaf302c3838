"""``prefwork serve``: a vLLM OpenAI-compatible server on any model reference (a judge or sampler).

    prefwork serve --model smollm2-135m-instruct --port 8011     # converts the GGUF once, then serves
    prefwork judge audit --judge pairwise --base-url http://127.0.0.1:8011/v1 --model smollm2-135m-instruct
    prefwork sample --engine openai --base-url http://127.0.0.1:8011/v1 --prompts FILE --out FILE

The model is resolved like everywhere else (a folder, a .gguf, an alias, a hub id); on CPU the
server runs in float32 without chunked prefill (``pipeline/serve.py``). It binds 127.0.0.1 unless
``--host`` says otherwise, prints its base URL once healthy, and runs until Ctrl-C, which stops
the server's whole process group. Clients ask for the model by its short name (the alias, the
GGUF's stem or the folder's name) unless ``--served-model-name`` sets another.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

from prefwork.flows.options import add_dataclass, from_args
from prefwork.pipeline.serve import ServeConfig

NAME = "serve"
HELP = "serve a model (folder, .gguf, alias, hub id) with vLLM's OpenAI-compatible server, e.g. as a judge"
DESCRIPTION = __doc__


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model reference: folder, .gguf file, alias "
                        "(smollm2-135m-instruct) or hub id org/name")
    parser.add_argument("--log", default=None, help="write the server's log to this file instead of the terminal")
    parser.add_argument("--cache-root", default=None, help="where converted GGUFs go (unset: $PREFWORK_CACHE, "
                        "else runs/.cache)")
    add_dataclass(parser, ServeConfig)
    parser.set_defaults(func=run)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from prefwork.pipeline.models import model_label
    from prefwork.pipeline.serve import VLLMServer

    cfg = from_args(ServeConfig, args)
    if not cfg.served_model_name:  # clients ask for a short, stable name, not a cache path
        cfg = ServeConfig(**{**vars(cfg), "served_model_name": model_label(args.model)})
    print(f"starting vLLM on {args.model} (first start on CPU takes minutes: load + compile) ...", file=sys.stderr,
          flush=True)
    t0 = time.perf_counter()
    server = VLLMServer.start(args.model, cfg, log_path=args.log, cache_root=args.cache_root,
                              inherit_output=args.log is None)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server like Ctrl-C does
    print(f"serving {server.model} at {server.base_url} (healthy after {time.perf_counter() - t0:.0f} s); "
          "Ctrl-C stops it", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        server.stop()
        return 0
    raise RuntimeError(f"the vLLM server exited with code {server.proc.returncode}"
                       + (f"; see {args.log}" if args.log else ""))
