"""A scoring engine that calls the project's Serve endpoint (``POST /v1/score``).

With it an audit scores against a remote fleet (e.g. vLLM replicas on GPUs) instead of loading
models in its own actors: set ``scoring.engine: http`` and ``scoring.url``. The model spec is the
checkpoint id as the service knows it. The token comes from ``$ILP_API_TOKEN``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from ilp_ray.records import McItem, OptionScores, history_messages
from ilp_ray.scoring.base import ScoringEngine

RETRIES = 8  # with backoff 0.5, 1, 2, 4, 8, 8, … s: rides out a replica restart


class HttpEngine(ScoringEngine):
    """Args:
        model: checkpoint id on the service (``GET /v1/checkpoints``).
        url: the service's base URL, e.g. ``http://ilp-serve:8000``.
        fmt: prompt format, applied by the service.
        batch_size: items per request.
        max_length: ignored (the service's own setting applies).
        tag: label written into ``OptionScores.model``.
        token: API token; default ``$ILP_API_TOKEN``.
    """

    name = "http"

    def __init__(self, model: str, *, url: str, fmt: str = "lm-eval", batch_size: int = 16,
                 max_length: int | None = None, tag: str | None = None, token: str | None = None):
        super().__init__(tag or str(model))
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"scoring.url must start with http:// or https://, got {url!r}")
        self.model, self.url, self.fmt, self.batch_size = str(model), url.rstrip("/"), fmt, batch_size
        self.token = token if token is not None else os.environ.get("ILP_API_TOKEN", "")

    def score(self, items: Sequence[McItem]) -> list[OptionScores]:
        out: list[OptionScores] = []
        for lo in range(0, len(items), self.batch_size):
            chunk = items[lo:lo + self.batch_size]
            body = {"checkpoint": self.model, "format": self.fmt, "n": 1,
                    "items": [{"id": it.id, "question": it.question, "options": list(it.options),
                               "answer": it.answer,
                               **({"history": history_messages(it.history)} if it.history else {})}
                              for it in chunk]}
            for it, row in zip(chunk, self._post(body)["items"]):
                out.append(OptionScores(id=it.id, model=self.tag, logprob_sum=tuple(row["loglikelihoods"]),
                                        n_tokens=tuple(row["n_tokens"]), n_chars=tuple(row["n_chars"]),
                                        truncated=bool(row["truncated"])))
                self._truncated += bool(row["truncated"])
        return out

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        delay = 0.5
        for attempt in range(RETRIES + 1):
            req = urllib.request.Request(f"{self.url}/v1/score", data=data,
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code not in (502, 503, 504) or attempt == RETRIES:
                    msg = json.loads(e.read() or b"{}").get("error", e.reason)
                    raise RuntimeError(f"{self.url}/v1/score answered {e.code}: {msg}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt == RETRIES:
                    raise RuntimeError(f"cannot reach the scoring service at {self.url}: {e}") from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")
