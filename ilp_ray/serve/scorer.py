"""The scorer deployment: engines multiplexed by checkpoint id, an LRU of loaded models per replica."""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from ilp_ray.serve.config import ServeConfig


class LoadedModel:
    """One loaded checkpoint and its engines, one per prompt format (they share the weights)."""

    def __init__(self, model_id: str, spec: str, cfg: ServeConfig):
        from ilp_ray.scoring.engines import ENGINES

        self.model_id, self.cfg = model_id, cfg
        self.cls = ENGINES.get(cfg.engine)
        if hasattr(self.cls, "load_shared"):
            extra = cfg.vllm_args if cfg.engine == "vllm" else {}
            self.handle = self.cls.load_shared(spec, max_length=cfg.max_length, **extra)
        else:
            self.handle = _load_hf(spec)
        self.engines: dict[str, Any] = {}

    def engine(self, fmt: str):
        if fmt not in self.engines:
            self.engines[fmt] = self.cls(self.handle, fmt=fmt, batch_size=self.cfg.batch_size,
                                         max_length=self.cfg.max_length, tag=self.model_id)
        return self.engines[fmt]

    def close(self) -> None:
        """Free the checkpoint now (once; a second call does nothing): a vLLM engine's core process
        and KV cache would otherwise outlive the model until the garbage collector ran."""
        handle, self.handle = getattr(self, "handle", None), None
        if handle is None:
            return
        self.engines.clear()
        close = getattr(self.cls, "close_shared", None)
        if close is not None:
            close(handle)
        del handle
        import gc

        gc.collect()

    def __del__(self):
        """Serve calls this when its LRU evicts the model, and Python again at collection."""
        self.close()


def _load_hf(spec: str):
    from ilp_ray.models import load_model

    return load_model(spec)


@serve.deployment(name="Scorer")
class Scorer:
    """Scores MC items with the checkpoint named by the request's multiplexed model id."""

    def __init__(self, cfg: dict):
        import torch

        from ilp_ray.env import apply_defaults

        apply_defaults(local_ray=False)
        self.cfg = ServeConfig(**cfg)
        torch.set_num_threads(self.cfg.threads)
        # torch work runs off the event loop, one batch at a time: requests queue, health checks don't.
        self.pool = ThreadPoolExecutor(max_workers=1)
        self._models: weakref.WeakSet[LoadedModel] = weakref.WeakSet()  # what the LRU holds now

        # The LRU size comes from config, so the decorator is applied here, to a plain function
        # (Serve caches its wrapper as an attribute of the function, which a bound method can't hold).
        async def load(model_id: str) -> LoadedModel:
            return await self._load_model(model_id)

        self._load = serve.multiplexed(max_num_models_per_replica=self.cfg.max_models_per_replica)(load)

    async def _load_model(self, model_id: str) -> LoadedModel:
        from ilp_ray.serve.checkpoints import resolve_checkpoint

        spec = resolve_checkpoint(model_id, self.cfg.checkpoint_roots, self.cfg.allow_bundled)
        loaded = await asyncio.get_running_loop().run_in_executor(self.pool, LoadedModel, model_id, spec, self.cfg)
        self._models.add(loaded)
        return loaded

    async def score(self, request: dict) -> dict:
        loaded = await self._load(serve.get_multiplexed_model_id())
        return await asyncio.get_running_loop().run_in_executor(self.pool, _score, loaded, request)

    def check_health(self) -> None:
        pass

    def __del__(self):
        """Free every loaded checkpoint when the replica shuts down (Serve calls this on a graceful
        stop: scale-down, redeploy, ``serve.shutdown``). The LRU frees only what it evicts; a vLLM
        engine's core process is the replica's child and holds the model and its KV cache, and
        orphaned ones (~3.8 GB for SmolLM2 on CPU) were seen after the vLLM suite."""
        for loaded in list(getattr(self, "_models", ())):
            loaded.close()


def _score(loaded: LoadedModel, req: dict) -> dict:
    from ilp_ray.config import ScoringConfig
    from ilp_ray.detect import item_results
    from ilp_ray.records import McItem, history_from_messages

    items = [McItem(id=str(it["id"]), question=it["question"], options=tuple(it["options"]),
                    answer=it["answer"], history=history_from_messages(it.get("history")))
             for it in req["items"]]
    scoring = ScoringConfig(format=req["format"], temperature=req["temperature"], length_norm=req["length_norm"])
    from ilp_ray.errors import DataError

    try:
        scores = loaded.engine(req["format"]).score(items)
        results = item_results(items, scores, scoring, n=req["n"], seed=req["seed"])
    except (DataError, ValueError) as e:  # the request's own fault, e.g. an option longer than the context
        return {"error": str(e).splitlines()[0][:500], "status": 422}
    return {"checkpoint": loaded.model_id, "format": req["format"], "n": req["n"], "items": results}
