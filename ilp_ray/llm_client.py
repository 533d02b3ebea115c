"""The one OpenAI-compatible chat call the judges share (conflict judge, corpus judge).

Plain ``urllib`` on purpose: one POST per question needs no SDK, and the tests run it against a
tiny local server.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


def chat_first_word(base_url: str, model: str, messages: list[dict], *, api_key_env: str, timeout: float,
                    who: str, max_tokens: int = 4) -> str:
    """The first word of ``chat_text``'s reply, lower-cased, stripped of punctuation; "" for an
    empty reply (a judge's verdict is one word)."""
    text = chat_text(base_url, model, messages, api_key_env=api_key_env, timeout=timeout, who=who,
                     max_tokens=max_tokens)
    return text.strip().split()[0].strip(".:,!\"'").lower() if text.strip() else ""


def chat_text(base_url: str, model: str, messages: list[dict], *, api_key_env: str, timeout: float,
              who: str, max_tokens: int = 4) -> str:
    """``POST {base_url}/v1/chat/completions`` at temperature 0; the reply's text.

    Args:
        base_url: the endpoint's base URL.
        model: the model name sent in the request.
        messages: chat messages.
        api_key_env: env variable whose value, if set, is sent as ``Authorization: Bearer``.
        timeout: seconds per request.
        who: names the caller in errors ("conflict judge").
        max_tokens: the reply budget.

    Returns:
        ``choices[0].message.content``.

    Raises:
        RuntimeError: unreachable endpoint, HTTP error, or a reply without that field; names the
            URL, never the key.
    """
    url = base_url.rstrip("/") + "/v1/chat/completions"
    body = {"model": model, "temperature": 0, "max_tokens": max_tokens, "messages": messages}
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read().decode())
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
        raise RuntimeError(f"{who} at {url} failed: {e}") from e
    try:
        text = str(reply["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError) as e:
        raise RuntimeError(f"{who} at {url}: no choices[0].message.content in {reply!r:.200}") from e
    return text
