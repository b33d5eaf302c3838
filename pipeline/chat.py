"""Turn a stored prompt into the exact text a model sees.

A prompt is plain text (one user turn) or a JSON list of chat messages (DESIGN.md);
either way the model's own chat template renders it, with the generation prompt added,
so sampling and training see identical prefixes.
"""
from __future__ import annotations

import json


def to_messages(prompt: str) -> list[dict]:
    """Messages for ``prompt``: a JSON list of {role, content} is used as is, else one user turn."""
    stripped = prompt.lstrip()
    if stripped.startswith("["):
        try:
            msgs = json.loads(stripped)
        except json.JSONDecodeError:
            msgs = None
        if isinstance(msgs, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            return msgs
    return [{"role": "user", "content": prompt}]


def render_prompt(tokenizer, prompt: str) -> str:
    """The templated prefix for ``prompt``; falls back to the raw text if the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(to_messages(prompt), add_generation_prompt=True, tokenize=False)
    return prompt
