"""The distributed engine around the model: DeepSpeed ZeRO (default) or plain torch DDP.

Both expose the same small surface to the loop: ``forward``/``backward_step``, the unwrapped
``module`` (for saving and trajectory scoring), ``set_lr``, and ``save``/``load`` of the
optimizer state. The choice is the config's ``engine.strategy``; nothing falls back silently.

The learning rate is set by the loop before every step from a pure function of the step
(``lr_at``), so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math
from pathlib import Path

from ilp_ray.train.config import EngineConfig, OptimConfig


def lr_at(step: int, total: int, optim: OptimConfig) -> float:
    """Learning rate for 0-based ``step`` of ``total``: linear warm-up, then the schedule's decay."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    span = max(1, total - optim.warmup_steps)
    frac = min(1.0, (step - optim.warmup_steps) / span)
    if optim.schedule == "linear":
        return optim.lr * (1 - frac)
    return optim.lr * 0.5 * (1 + math.cos(math.pi * frac))


def engine_defaults(engine: EngineConfig, use_gpu: bool) -> tuple[int, str]:
    """(ZeRO stage, precision): ZeRO-1 + fp32 on CPU, ZeRO-2 + bf16 on GPU, unless configured."""
    stage = engine.zero_stage if engine.zero_stage is not None else (2 if use_gpu else 1)
    precision = engine.precision or ("bf16" if use_gpu else "fp32")
    return stage, precision


def deepspeed_config(engine: EngineConfig, optim: OptimConfig, use_gpu: bool, micro_batch: int,
                     world: int) -> dict:
    """The DeepSpeed config dict. The optimizer is torch's AdamW, passed in as a client optimizer."""
    stage, precision = engine_defaults(engine, use_gpu)
    cfg = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "train_batch_size": micro_batch * world,
        "gradient_accumulation_steps": 1,
        # On CPU the contiguous gradient buffer costs one more copy of every gradient per step
        # (~10% of a small model's step, profiled) and guards against GPU memory fragmentation only.
        "zero_optimization": {"stage": stage, "contiguous_gradients": use_gpu},
        # torch.optim.AdamW is not on DeepSpeed's list of ZeRO-tested optimizers, but ZeRO-1/2 only
        # partition its state; it is the same optimizer DDP uses, which keeps the comparison fair.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10 ** 12,
        "wall_clock_breakdown": False,
    }
    if optim.grad_clip is not None:
        cfg["gradient_clipping"] = optim.grad_clip
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True}
    return cfg


class Strategy:
    """A model wrapped for data-parallel training. Build with ``make_strategy``."""

    module = None  # the unwrapped HF model

    def forward(self, **batch):
        raise NotImplementedError

    def backward_step(self, loss) -> None:
        raise NotImplementedError

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def save(self, directory: Path, rank: int) -> None:
        raise NotImplementedError

    def load(self, directory: Path) -> None:
        raise NotImplementedError


class DeepSpeedStrategy(Strategy):
    def __init__(self, model, optim: OptimConfig, engine: EngineConfig, use_gpu: bool, micro_batch: int,
                 world: int):
        import deepspeed
        import torch

        opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                weight_decay=optim.weight_decay, fused=optim.fused)
        # Ray Train already set up torch.distributed (gloo on CPU); DeepSpeed wraps that group.
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=opt, config=deepspeed_config(engine, optim, use_gpu, micro_batch, world),
            dist_init_required=False)
        self.module = self.engine.module

    def forward(self, **batch):
        return self.engine(**batch)

    def backward_step(self, loss) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def save(self, directory: Path, rank: int) -> None:
        # Collective: every rank writes its own ZeRO partition ("zero_pp_rank_<r>_…"); rank 0 also
        # writes the module states.
        self.engine.save_checkpoint(str(directory), tag="state", save_latest=False)

    def load(self, directory: Path) -> None:
        _safe_deepspeed_loads(self.engine)
        path, _ = self.engine.load_checkpoint(str(directory), tag="state", load_optimizer_states=True,
                                              load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state under {directory}")


#: The only classes DeepSpeed's own checkpoint files hold besides tensors and containers (found by
#: loading its ZeRO states with ``weights_only=True``); nothing else is unpickled.
_DEEPSPEED_SAFE = ("deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.zero.config.ZeroStageEnum",
                   "deepspeed.utils.tensor_fragment.fragment_address")


def _safe_deepspeed_loads(engine) -> None:
    """Make DeepSpeed read its checkpoint files with torch's restricted unpickler (it calls
    ``torch.load(weights_only=False)``, which runs any code a checkpoint on a shared volume holds)."""
    import importlib

    import torch

    allowed = []
    for dotted in _DEEPSPEED_SAFE:
        mod, _, name = dotted.rpartition(".")
        allowed.append(getattr(importlib.import_module(mod), name))

    def load(path: str, map_location=None):
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    engine.checkpoint_engine.load = load


class DdpStrategy(Strategy):
    def __init__(self, model, optim: OptimConfig, use_gpu: bool, world: int):
        import torch

        self.grad_clip = optim.grad_clip
        self.module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.wrapped = DistributedDataParallel(model, device_ids=None)
        else:
            self.wrapped = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                           weight_decay=optim.weight_decay, fused=optim.fused)

    def forward(self, **batch):
        return self.wrapped(**batch)

    def backward_step(self, loss) -> None:
        import torch

        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, directory: Path, rank: int) -> None:
        import torch

        if rank == 0:  # DDP replicates the optimizer state: one copy is enough
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        import torch

        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))


def make_strategy(model, optim: OptimConfig, engine: EngineConfig, use_gpu: bool, micro_batch: int,
                  world: int) -> Strategy:
    if engine.strategy == "deepspeed":
        return DeepSpeedStrategy(model, optim, engine, use_gpu, micro_batch, world)
    return DdpStrategy(model, optim, use_gpu, world)
