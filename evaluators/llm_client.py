"""The one client every LLM judge uses: bounded, rate-limited, retried, metered calls to an OpenAI-compatible API.

``JudgeClient.chat(messages, ...)`` sends one chat completion through ``AsyncOpenAI`` and returns a
``Reply`` (text, token usage, attempts). Around each call:

- at most ``concurrency`` requests in flight (an ``asyncio.Semaphore``);
- optional requests/min and tokens/min limits (token buckets; a request's tokens are estimated
  before it is sent as prompt characters / 4 + ``max_tokens``);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections; a
  ``retry-after`` / ``retry-after-ms`` header from the server is honoured (capped at ``max_backoff``);
  other errors (400: prompt too long, 401, 404) fail at once;
- usage and cost per judge (``Usage``), and a cost budget (``max_cost``) never exceeded however many
  requests are in flight: a request reserves an upper bound of its cost (``worst_case_cost``) before
  it is sent and settles with the real usage after; one that does not fit waits while others are in
  flight, and is refused (``BudgetExceeded``) when none is. (The chars/4 estimate ``tokens_per_min``
  uses is too low for a budget: it let every concurrent slot overshoot, issue 19 item 10.)

The API key is read from an environment variable named in the options (never stored in a config),
and every error message this module hands out has the key's text replaced by ``***``.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from prefwork.pipeline.checks import check_fields
from prefwork.pipeline.run import redact_text


#: Chat-template tokens a request may add beyond its messages' text (role headers, a default system
#: preamble such as Llama 3.1's date lines): per message, and once per request.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_PER_REQUEST = 32


def worst_case_cost(messages: list[dict], max_tokens: int, price_in: float, price_out: float) -> float:
    """An upper bound of one request's cost in USD (prices per million tokens).

    A BPE token spells at least one byte, so a prompt has at most as many tokens as its UTF-8 bytes
    plus what the chat template adds; the server stops a completion at ``max_tokens``.
    """
    prompt = TEMPLATE_TOKENS_PER_REQUEST + sum(len(str(m.get("content", "")).encode()) + TEMPLATE_TOKENS_PER_MESSAGE
                                               for m in messages)
    return (prompt * price_in + max_tokens * price_out) / 1e6


class BudgetExceeded(RuntimeError):
    """The next request would pass ``max_cost``: nothing more is sent."""


class JudgeRequestError(RuntimeError):
    """A request that failed for good (retries exhausted, or a non-retryable error)."""


@dataclass
class ClientOptions:
    """How judges reach their OpenAI-compatible server (base URL, key, limits, retries, budget)."""

    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 "
                                                                 "(default: the judge config's, else OpenAI)"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the API key "
                                                                          "(a local server needs none)"})
    concurrency: int = field(default=32, metadata={"help": "requests in flight at most", "min": 1})
    requests_per_min: float = field(default=0.0, metadata={"help": "requests/min limit (0 = none)", "min": 0.0})
    tokens_per_min: float = field(default=0.0, metadata={"help": "tokens/min limit, estimated before sending (0 = none)",
                                                         "min": 0.0})
    max_retries: int = field(default=6, metadata={"help": "retries on 429/5xx/timeouts before a row is marked failed",
                                                  "min": 0})
    timeout: float = field(default=60.0, metadata={"help": "seconds per request", "above": 0.0})
    max_backoff: float = field(default=60.0, metadata={"help": "longest wait between retries (also caps retry-after)",
                                                       "min": 0.0})
    max_cost: float = field(default=0.0, metadata={"help": "stop cleanly before spending more than this (USD; 0 = no limit)",
                                                   "min": 0.0})

    def __post_init__(self):
        check_fields(self)  # bounds in the metadata (pipeline.checks): refused before any request


@dataclass
class Usage:
    """Requests, tokens and cost of one judge in one run."""

    requests: int = 0
    cached: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cached": self.cached, "retries": self.retries, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "cost_usd": round(self.cost, 6)}


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    finish_reason: str | None = None


class TokenBucket:
    """``rate_per_min`` units per minute, bursts of at most one second's worth (at least one request)."""

    def __init__(self, rate_per_min: float, burst: float | None = None):
        self.rate = rate_per_min / 60.0
        self.capacity = max(burst if burst is not None else self.rate, 1.0)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)  # one oversized request waits for a full bucket, not forever
        async with self.lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


def _retry_after(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None  # an HTTP date: fall back to our own backoff
    return None


class JudgeClient:
    """One ``AsyncOpenAI`` client shared by every judge of a run, with limits, retries and accounting.

    ``http_client`` (an ``httpx``-style ``AsyncClient`` as the installed openai package expects) lets
    tests put a fake transport under the real openai client.
    """

    def __init__(self, options: ClientOptions | None = None, *, base_url: str | None = None,
                 http_client: Any = None, backoff_base: float = 0.5):
        self.options = options or ClientOptions()
        self.base_url = base_url or self.options.base_url
        self._key = os.environ.get(self.options.api_key_env) or ""
        self._http_client = http_client
        self._client = None
        self.backoff_base = backoff_base
        self.usage: dict[str, Usage] = {}
        self._sem: asyncio.Semaphore | None = None
        self._rpm = self._tpm = None
        self._reserved, self._holding = 0.0, 0  # budget reserved by requests in flight, and how many hold some
        self._budget: asyncio.Condition | None = None
        self._loop = None

    # -- plumbing ----------------------------------------------------------------------
    def _ensure(self) -> None:
        """Build the client and the asyncio primitives on first use inside the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        from openai import AsyncOpenAI

        self._loop = loop
        self._client = AsyncOpenAI(base_url=self.base_url, api_key=self._key or "EMPTY", max_retries=0,
                                   timeout=self.options.timeout, http_client=self._http_client)
        self._sem = asyncio.Semaphore(max(1, self.options.concurrency))
        self._budget = asyncio.Condition()
        self._rpm = TokenBucket(self.options.requests_per_min) if self.options.requests_per_min > 0 else None
        self._tpm = (TokenBucket(self.options.tokens_per_min, burst=self.options.tokens_per_min / 60.0)
                     if self.options.tokens_per_min > 0 else None)

    def scrub(self, text: str) -> str:
        """``text`` with the API key and any other credential replaced by ``***`` (the project's one
        redaction, ``pipeline.run.redact_text``: the sampler's errors go through it too)."""
        return redact_text(text, [self._key])

    def usage_for(self, judge: str) -> Usage:
        return self.usage.setdefault(judge, Usage())

    def total_cost(self) -> float:
        return sum(u.cost for u in self.usage.values())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client, self._loop = None, None

    async def first_model(self) -> str:
        """The server's first served model (for configs that leave ``model`` empty)."""
        self._ensure()
        try:
            models = await self._client.models.list()
        except Exception as exc:  # noqa: BLE001 - any failure here means "tell the user which server"
            raise JudgeRequestError(self.scrub(f"cannot list models at {self.base_url}: {exc}")) from None
        if not models.data:
            raise JudgeRequestError(f"the server at {self.base_url} serves no model")
        return models.data[0].id

    # -- one request -------------------------------------------------------------------
    async def chat(self, judge: str, messages: list[dict], *, model: str, temperature: float = 0.0,
                   max_tokens: int = 16, extra: dict | None = None,
                   price_in: float = 0.0, price_out: float = 0.0) -> Reply:
        """One chat completion, retried and metered under ``judge``; raises on lasting failure.

        ``extra`` holds further request fields (``extra_body``, ``response_format``, ``seed`` ...).
        ``price_in``/``price_out`` are USD per million prompt/completion tokens.
        """
        self._ensure()
        usage = self.usage_for(judge)
        est_tokens = sum(len(str(m.get("content", ""))) for m in messages) / 4 + max_tokens  # for tokens/min
        bound = worst_case_cost(messages, max_tokens, price_in, price_out)
        async with self._sem:
            await self._reserve(bound)
            try:
                resp, attempt = await self._send(usage, est_tokens, model=model, messages=messages,
                                                 temperature=temperature, max_tokens=max_tokens, **(extra or {}))
                u = getattr(resp, "usage", None)
                p_tok = int(getattr(u, "prompt_tokens", 0) or 0)
                c_tok = int(getattr(u, "completion_tokens", 0) or 0)
                usage.cost += p_tok * price_in / 1e6 + c_tok * price_out / 1e6
            finally:
                await self._settle(bound)
            usage.requests += 1
            usage.prompt_tokens += p_tok
            usage.completion_tokens += c_tok
            choice = resp.choices[0] if getattr(resp, "choices", None) else None
            text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
            return Reply(text=text, prompt_tokens=p_tok, completion_tokens=c_tok, attempts=attempt,
                         finish_reason=getattr(choice, "finish_reason", None))

    async def _send(self, usage: Usage, est_tokens: float, **request):
        """One completion under the rate limits, retried on 429/5xx/timeouts: (response, attempts)."""
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError)
        attempt = 0
        while True:
            attempt += 1
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None:
                await self._tpm.take(est_tokens)
            try:
                return await self._client.chat.completions.create(**request), attempt
            except retryable as exc:
                status = getattr(exc, "status_code", None)
                if attempt > self.options.max_retries:
                    usage.failures += 1
                    raise JudgeRequestError(self.scrub(
                        f"gave up after {attempt} attempts: {type(exc).__name__}"
                        f"{f' {status}' if status else ''}: {exc}")) from None
                usage.retries += 1
                wait = _retry_after(exc)
                if wait is None:
                    wait = self.backoff_base * 2 ** (attempt - 1) * (0.5 + random.random())
                await asyncio.sleep(min(max(wait, 0.0), self.options.max_backoff))
            except openai.APIError as exc:  # 4xx other than 429: retrying will not help
                usage.failures += 1
                raise JudgeRequestError(self.scrub(f"{type(exc).__name__}: {exc}")) from None

    # -- the budget --------------------------------------------------------------------
    async def _reserve(self, bound: float) -> None:
        """Hold ``bound`` USD of the budget; wait while requests in flight may free some; refuse when none is."""
        if self.options.max_cost <= 0:
            return
        async with self._budget:
            while self.total_cost() + self._reserved + bound > self.options.max_cost:
                if self._holding == 0:
                    raise BudgetExceeded(f"max cost {self.options.max_cost} USD reached "
                                         f"(spent {self.total_cost():.4f} USD)")
                await self._budget.wait()
            self._reserved += bound
            self._holding += 1

    async def _settle(self, bound: float) -> None:
        """Give a reservation back (the real cost is already in ``usage``) and wake requests waiting for budget."""
        if self.options.max_cost <= 0:
            return
        async with self._budget:
            self._holding -= 1
            self._reserved = max(0.0, self._reserved - bound) if self._holding else 0.0  # no float drift
            self._budget.notify_all()
