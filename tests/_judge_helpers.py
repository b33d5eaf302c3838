"""Helpers for the judge tests: a fake OpenAI-compatible server on an httpx MockTransport."""
from __future__ import annotations

import asyncio
import json
import time

import httpx2 as httpx  # the transport layer of the installed openai package
import polars as pl


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 1) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "c", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}})


class FakeServer:
    """Scripted answers: ``script(body, n)`` returns a Response (or raises) for the n-th request."""

    def __init__(self, script, delay: float = 0.0):
        self.script, self.delay = script, delay
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.times: list[float] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        self.times.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self.script(body, len(self.bodies))
        finally:
            self.in_flight -= 1

    def client(self):
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def cands(n: int, prompt: str = "What is 6 x 7?") -> pl.DataFrame:
    return pl.DataFrame({"prompt_id": [f"p{i // 2}" for i in range(n)], "prompt": [prompt] * n,
                         "candidate_id": [i % 2 for i in range(n)], "text": [f"answer {i}: 42" for i in range(n)]})
