"""What every LLM judge shares: its spec (``data/judges/<name>/config.yaml``), prompt rendering,
and ``call_judge``, the one way a judge asks its model (answer cache first, then one metered request).

A judge directory (``data/judges/<name>/``) holds ``config.yaml``::

    kind: rubric            # rubric (evaluators.rubric) | pairwise (evaluators.pairwise) | combined (evaluators.combined)
    model: gpt-4o-mini      # served model name; "" = the server's first model; --model overrides
    base_url: null          # --base-url overrides
    temperature: 0
    max_tokens: 4
    system: system.md       # optional system message (file in the judge dir, or inline text)
    template: prompt.md     # the user message; {{prompt}}, {{answer}}, {{reference}} are filled in
    score_range: [1, 5]
    correct_threshold: 4    # "correct" = score >= this (reported by audit)
    structured: vllm        # vllm: structured_outputs choice; openai: JSON schema; none: parse text
    listwise_template: listwise.md   # optional: best/worst over N answers in one call
    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}
    gold: gold.jsonl        # hand-graded answers for `prefwork judge audit`

The judges that use it: ``evaluators.rubric.RubricJudge`` (a grade per answer, or listwise best/worst)
and ``evaluators.pairwise.LLMPairwiseJudge`` (A vs B). An answer that cannot be parsed
(``evaluators.parsers``) keeps its raw text and an error; it is never cached.
"""
from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from prefwork.evaluators.judge_cache import JudgeCache, cache_key, text_hash
from prefwork.evaluators.llm_client import BudgetExceeded, JudgeClient, JudgeRequestError
from prefwork.pipeline import DATA_DIR

JUDGES_DIR = DATA_DIR / "judges"
STRUCTURED_MODES = ("vllm", "openai", "none")
NOT_JUDGED_BUDGET = "not judged: max cost reached"


@dataclass(frozen=True)
class JudgeSpec:
    """A judge's config (``config.yaml``) with its templates read in."""

    name: str
    kind: str = "rubric"
    model: str = ""
    base_url: str | None = None
    temperature: float = 0.0
    max_tokens: int = 4
    system: str = ""
    template: str = ""
    listwise_template: str = ""
    score_range: tuple[int, int] = (1, 5)
    correct_threshold: float | None = None
    structured: str = "vllm"
    choices: tuple[str, ...] = ("A", "B", "tie")
    orders: str = "both"
    seed: int = 0
    price_in: float = 0.0
    price_out: float = 0.0
    gold: Path | None = None
    components: tuple[tuple[str, float], ...] = ()
    rule_cap: float | None = None
    directory: Path | None = None
    description: str = ""

    @property
    def template_hash(self) -> str:
        return text_hash(self.system, self.template, self.listwise_template)

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "structured": self.structured}

    def with_overrides(self, **kw: Any) -> "JudgeSpec":
        """A copy with the non-None overrides applied (CLI options: model, base_url, structured ...)."""
        kw = {k: v for k, v in kw.items() if v is not None}
        if kw.get("structured") and kw["structured"] not in STRUCTURED_MODES:
            raise ValueError(f"structured output mode must be one of {', '.join(STRUCTURED_MODES)}")
        return replace(self, **kw)


def _text(value: str | None, directory: Path) -> str:
    """A template field: a file in the judge directory if one has that name, else the text itself."""
    if not value:
        return ""
    path = directory / value
    return path.read_text() if len(value) < 200 and path.is_file() else value


def load_spec(name_or_dir: str | Path, judges_dir: Path = JUDGES_DIR) -> JudgeSpec:
    """Read ``<judges_dir>/<name>/config.yaml`` (or a directory given by path) into a ``JudgeSpec``."""
    import yaml

    d = Path(name_or_dir)
    if not (d / "config.yaml").is_file():
        d = judges_dir / str(name_or_dir)
    cfg_path = d / "config.yaml"
    if not cfg_path.is_file():
        raise ValueError(f"no judge config at {cfg_path}")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a mapping")
    secret = [k for k in cfg if re.search(r"api[_-]?key|secret|password", str(k), re.I)]
    if secret:
        raise ValueError(f"{cfg_path}: judge configs must not hold keys ({', '.join(secret)}); "
                         "name an environment variable with --api-key-env instead")
    price = cfg.get("price") or {}
    lo, hi = (cfg.get("score_range") or [1, 5])
    spec = JudgeSpec(
        name=str(cfg.get("name") or d.name), kind=str(cfg.get("kind", "rubric")), model=str(cfg.get("model") or ""),
        base_url=cfg.get("base_url"), temperature=float(cfg.get("temperature", 0.0)),
        max_tokens=int(cfg.get("max_tokens", 4)), system=_text(cfg.get("system"), d),
        template=_text(cfg.get("template"), d), listwise_template=_text(cfg.get("listwise_template"), d),
        score_range=(int(lo), int(hi)), correct_threshold=cfg.get("correct_threshold"),
        structured=str(cfg.get("structured", "vllm")), choices=tuple(cfg.get("choices") or ("A", "B", "tie")),
        orders=str(cfg.get("orders", "both")), seed=int(cfg.get("seed", 0)),
        price_in=float(price.get("input_per_mtok", 0.0)), price_out=float(price.get("output_per_mtok", 0.0)),
        gold=(d / cfg["gold"]) if cfg.get("gold") else None,
        components=tuple((str(j["name"]), float(j.get("weight", 1.0))) for j in cfg.get("judges") or ()),
        rule_cap=cfg.get("rule_cap"), directory=d, description=str(cfg.get("description", "")))
    if spec.structured not in STRUCTURED_MODES:
        raise ValueError(f"{cfg_path}: structured must be one of {', '.join(STRUCTURED_MODES)}")
    if spec.kind in ("rubric", "pairwise") and not spec.template:
        raise ValueError(f"{cfg_path}: a {spec.kind} judge needs a template")
    return spec


# --- prompts and answers --------------------------------------------------------------------

def render(template: str, **values: str) -> str:
    """Fill ``{{name}}`` placeholders (braces elsewhere, e.g. JSON examples, are left alone)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(values.get(m.group(1), m.group(0))), template)


def prompt_text(prompt: str) -> str:
    """A chat prompt stored as a JSON list of messages, shown to the judge as ``role: content`` lines."""
    s = (prompt or "").strip()
    if s.startswith("["):
        try:
            msgs = json.loads(s)
            if isinstance(msgs, list) and all(isinstance(m, dict) and "content" in m for m in msgs):
                if len(msgs) == 1:
                    return str(msgs[0]["content"])
                return "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in msgs)
        except json.JSONDecodeError:
            pass
    return prompt or ""


def messages_for(spec: JudgeSpec, user: str) -> list[dict]:
    return ([{"role": "system", "content": spec.system}] if spec.system else []) + [{"role": "user", "content": user}]


def json_schema_format(name: str, properties: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


@dataclass
class Verdict:
    """One judge call's outcome: a parsed value or an error, with the raw answer for ``detail``."""

    value: Any = None
    raw: str | None = None
    error: str | None = None
    cached: bool = False


async def call_judge(spec: JudgeSpec, client: JudgeClient, cache: JudgeCache, *, kind: str, user: str,
                     inputs: dict, seed: int, extra: dict, parse: Callable[[str], Any]) -> Verdict:
    """Cache lookup, then one metered request; the parsed value is cached, failures never are."""
    key = cache_key(judge=f"{spec.name}:{kind}", template_hash=spec.template_hash, model=spec.model, inputs=inputs,
                    sampling=spec.sampling(), seed=seed)
    hit = cache.get(key)
    if hit is not None:
        client.usage_for(spec.name).cached += 1
        return Verdict(hit["value"], hit.get("raw"), None, cached=True)
    if key in cache.inflight:  # the same call is already on its way in this run: share its answer
        return await asyncio.shield(cache.inflight[key])
    fut = cache.inflight[key] = asyncio.get_running_loop().create_future()
    try:
        v = await _request(spec, client, cache, key, user, seed, extra, parse)
    except BaseException:
        fut.set_result(Verdict(error="cancelled"))
        raise
    finally:
        cache.inflight.pop(key, None)
    if not fut.done():
        fut.set_result(v)
    return v


async def _request(spec, client, cache, key, user, seed, extra, parse) -> Verdict:
    req_extra = dict(extra)
    if seed:
        req_extra["seed"] = seed
    max_tokens = spec.max_tokens
    choices = req_extra.get("extra_body", {}).get("structured_outputs", {}).get("choice")
    if choices:  # a constrained choice cut off by max_tokens is garbage ('ti' for 'tie'); a token spells >= 1 byte
        max_tokens = max(max_tokens, max(len(str(c).encode()) for c in choices) + 1)
    try:
        reply = await client.chat(spec.name, messages_for(spec, user), model=spec.model, temperature=spec.temperature,
                                  max_tokens=max_tokens, extra=req_extra, price_in=spec.price_in,
                                  price_out=spec.price_out)
    except BudgetExceeded:
        return Verdict(error=NOT_JUDGED_BUDGET)
    except JudgeRequestError as exc:
        return Verdict(error=f"request failed: {exc}")
    value = parse(reply.text)
    if value is None:
        return Verdict(raw=reply.text, error=f"unparsable judge answer: {reply.text[:200]!r}")
    cache.put(key, spec.name, {"value": value, "raw": reply.text})
    return Verdict(value, reply.text)
