"""Any OpenAI-compatible endpoint (vLLM's server, OpenAI, ...) behind ``pipeline.sample.Engine``.

Why: sampling from a model that is already served elsewhere, or from a bigger server
than this machine, with the same contract and resumable shards as the offline engines.

- Chat completions by default: the server applies the model's chat template to
  ``pipeline.chat.to_messages(prompt)``, the same prefix ``render_prompt`` makes locally.
  ``api="completions"`` sends the raw prompt text instead.
- ``AsyncOpenAI`` with at most ``max_concurrency`` requests in flight (a semaphore).
  ``n`` candidates go in one request with ``seed``; vLLM then seeds candidate ``j`` with
  ``seed + j``, which the rows record. With ``n_per_request=False`` (servers without
  ``n``) candidate ``j`` is its own request with ``seed + j``: the same rows on vLLM.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter; after ``max_retries`` an ``EngineError`` says what failed. The shard in flight
  is lost, finished shards stay on disk for a restart.
- The API key is read from the environment variable ``api_key_env`` and never stored in
  a config, a log or an error message: a server's text in an error goes through
  ``pipeline.run.redact_text`` (a server may echo the Authorization header back).
"""
from __future__ import annotations

import asyncio
import os
import random

from prefwork.pipeline.chat import to_messages
from prefwork.pipeline.run import redact_text
from prefwork.pipeline.sample import Completion, PromptTooLong, SampleConfig, Skipped, apply_stop, derive_seed

#: Phrases of a 400 answer that mean "the prompt does not fit the context window".
_TOO_LONG = ("context length", "maximum context", "too long", "max_model_len", "is too large", "exceeds")


class EngineError(RuntimeError):
    """A sampling backend failed for good (after retries); finished shards are kept."""


class OpenAIEngine:
    """Sample from an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 16, max_retries: int = 5, request_timeout: float = 120.0,
                 n_per_request: bool = True, api: str = "chat", backoff_s: float = 0.5):
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', not {api!r}")
        if not base_url:
            raise ValueError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        self.base_url, self.api, self.n_per_request = base_url, api, n_per_request
        self.api_key_env = api_key_env
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.request_timeout, self.backoff_s = request_timeout, backoff_s
        self.model = model or asyncio.run(self._served_model())

    def _client(self):
        from openai import AsyncOpenAI

        key = os.environ.get(self.api_key_env) or "EMPTY"  # local servers accept any key
        return AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.request_timeout)

    async def _served_model(self) -> str:
        async with self._client() as client:
            models = await self._retry(lambda: client.models.list(), "listing models")
        if not models.data:
            raise EngineError(f"{self.base_url} serves no models")
        return models.data[0].id

    async def _retry(self, call, what: str):
        """Run ``call()`` with backoff on retryable errors; raise ``EngineError`` when they persist."""
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError)
        for attempt in range(self.max_retries + 1):
            try:
                return await call()
            except retryable as exc:
                if attempt == self.max_retries:
                    why = (f"HTTP {exc.status_code}: {self._safe(exc)}" if isinstance(exc, openai.APIStatusError)
                           else "cannot connect to the server (is it running, is the URL right?)"
                           if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)
                           else self._safe(exc))
                    raise EngineError(f"{what} at {self.base_url} failed after {attempt + 1} attempts: "
                                      f"{type(exc).__name__}: {why}") from None
                await asyncio.sleep(self.backoff_s * 2 ** attempt * (0.5 + random.random()))
            except openai.BadRequestError:
                raise  # the caller tells a too-long prompt from a bad request
            except openai.APIStatusError as exc:
                why = (f"authentication failed (check the key in ${self.api_key_env})" if exc.status_code in (401, 403)
                       else f"HTTP {exc.status_code}: {self._safe(exc)}")
                raise EngineError(f"{what} at {self.base_url} failed: {why}") from None

    def _safe(self, text) -> str:
        """A server's text with any credential in it replaced (``pipeline.run.redact_text``, rule a):
        a server may echo the Authorization header back."""
        return redact_text(" ".join(str(text).split())[:500], [os.environ.get(self.api_key_env) or ""])

    async def _request(self, client, prompt: str, cfg: SampleConfig, n: int, seed: int):
        args = dict(model=self.model, n=n, seed=seed, temperature=cfg.temperature, top_p=cfg.top_p,
                    max_tokens=cfg.max_tokens, stop=list(cfg.stop) or None)
        if self.api == "chat":
            resp = await self._retry(lambda: client.chat.completions.create(
                messages=to_messages(prompt), logprobs=True, **args), "a chat completion")
        else:
            resp = await self._retry(lambda: client.completions.create(
                prompt=prompt, logprobs=0, **args), "a completion")
        comps = []
        for ch in sorted(resp.choices, key=lambda c: c.index):
            raw = ch.message.content if self.api == "chat" else ch.text
            text, cut = apply_stop(raw or "", cfg.stop)
            comps.append(Completion(text.strip(), "stop" if cut else (ch.finish_reason or "length"),
                                    self._num_tokens(ch, resp, n), seed + ch.index))
        return comps

    def _num_tokens(self, choice, resp, n: int) -> int:
        """Tokens of one choice: from its logprobs; from ``usage`` when the server sends none."""
        lp = getattr(choice, "logprobs", None)
        if lp is not None:
            toks = lp.content if self.api == "chat" else lp.tokens
            if toks is not None:
                return len(toks)
        usage = getattr(resp, "usage", None)
        return int(usage.completion_tokens // n) if usage and usage.completion_tokens else 0

    async def _one_prompt(self, client, sem, prompt: str, cfg: SampleConfig, seed: int) -> list[Completion]:
        import openai

        calls = [(cfg.n, seed)] if self.n_per_request else [(1, seed + j) for j in range(cfg.n)]
        comps: list[Completion] = []
        try:
            for n, s in calls:
                async with sem:
                    got = await self._request(client, prompt, cfg, n, s)
                comps.extend(got if n > 1 else [Completion(c.text, c.finish_reason, c.num_tokens, s) for c in got])
        except openai.BadRequestError as exc:
            msg = self._safe(exc)
            if not any(k in msg.lower() for k in _TOO_LONG):
                raise EngineError(f"the server at {self.base_url} rejected a request with HTTP 400: {msg}") from None
            reason = f"the server says the prompt does not fit the context window ({msg[:200]})"
            if cfg.on_long_prompt != "skip":
                raise PromptTooLong(prompt, reason) from None
            return Skipped(reason=reason)
        return comps

    async def _generate(self, prompts: list[str], cfg: SampleConfig, shard_seed: int):
        sem = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            tasks = [asyncio.ensure_future(self._one_prompt(client, sem, p, cfg, derive_seed(shard_seed, i)))
                     for i, p in enumerate(prompts)]
            try:
                return await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()

    def generate(self, prompts: list[str], cfg: SampleConfig, shard_seed: int) -> list[list[Completion]]:
        return list(asyncio.run(self._generate(prompts, cfg, shard_seed)))
