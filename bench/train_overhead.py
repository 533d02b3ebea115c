"""Training overhead: Ray Train + DeepSpeed loop vs a plain single-process PyTorch loop.

Same model (a Llama, hidden 256 × 4 layers, built in code), same SFT examples, same order, same
batch size, same number of steps, one torch thread each. Both figures are steady state: tokens
(non-padding) per second from step ``--skip`` to the last step, measured inside the loop, so Ray
start-up, model loading and the final checkpoint are excluded. The plain loop runs before and
after the Ray job and the two are averaged, to cancel drift on a shared machine.

    .venv/bin/python bench/train_overhead.py [--steps 200] [--skip 20] [--batch-size 8]

The last line is one JSON object: ``overhead`` = 1 − ray_tokens_per_s / plain_tokens_per_s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilp_ray.env import apply_defaults

WORDS = ["alpha", "beta", "gamma", "delta", "river", "castle", "dragon", "lantern", "meadow", "violin",
         "comet", "apple", "orange", "north", "south", "east", "west", "under", "over", "quickly",
         "slowly", "bright", "dark"]


def records(n: int, seed: int = 0):
    import numpy as np

    from ilp_ray.records import SftRecord

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 40))))
        response = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 15))))
        out.append(SftRecord(id=f"r{i}", prompt=f"Question {i}: {prompt}?", response=response))
    return out


def plain_loop(model_dir: Path, examples, order, batch_size: int, steps: int, skip: int, lr: float) -> float:
    """The reference: one process, no Ray, no DeepSpeed. Returns steady-state tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM

    from ilp_ray.train.sft_data import collate

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    tokens, t0 = 0, None
    for step in range(steps):
        if step == skip:
            t0 = time.perf_counter()
        idx = [order[(step * batch_size + j) % len(order)] for j in range(batch_size)]
        batch = collate([examples[i] for i in idx], pad_id=0)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if t0 is not None:
            tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--skip", type=int, default=20, help="steps excluded from timing (warm-up)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--records", type=int, default=None, help="default: steps × batch size (one epoch)")
    ap.add_argument("--strategy", default="deepspeed", choices=["deepspeed", "ddp"])
    args = ap.parse_args()
    args.records = args.records or args.steps * args.batch_size
    if args.records < args.steps * args.batch_size:
        ap.error("--records must cover steps × batch size: both loops must stay in epoch 0's order")
    apply_defaults()

    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-train-"))
    try:
        print(json.dumps(_bench(args, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, work: Path) -> dict:
    from ilp_ray.data.load import read_sft
    from ilp_ray.models.tiny import make_tiny_llama, make_tiny_tokenizer
    from ilp_ray.train.config import SftTrainConfig
    from ilp_ray.train.order import ShuffledSampler
    from ilp_ray.train.run import run_training
    from ilp_ray.train.sft_data import encode_sft

    recs = records(args.records)
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps({"id": r.id, "prompt": r.prompt, "response": r.response}) + "\n"
                            for r in recs))
    tok = make_tiny_tokenizer([f"{r.prompt}\n{r.response}" for r in recs], vocab_size=1024)
    model_dir = work / "model"
    make_tiny_llama(tok, seed=0, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    cfg = SftTrainConfig.model_validate({
        "data": str(data), "run_dir": str(work / "runs"), "name": "bench",
        "model": {"spec": str(model_dir)}, "sft": {"format": "chat", "max_length": 256},
        "optim": {"lr": 1e-4, "batch_size": args.batch_size, "epochs": 100, "max_steps": args.steps},
        "engine": {"strategy": args.strategy}, "checkpoint": {"every_steps": 10 ** 6},
        "trajectory": {"enabled": False}, "tracking": {"enabled": False},
        "timing_skip_steps": args.skip, "log_every": 10 ** 6})
    examples = encode_sft(read_sft(data), tok, "chat", 256)
    order = ShuffledSampler([e.subset for e in examples], seed=0).order(0)

    plain_before = plain_loop(model_dir, examples, order, args.batch_size, args.steps, args.skip, 1e-4)
    t = time.perf_counter()
    result = run_training(cfg)
    ray_wall = time.perf_counter() - t
    plain_after = plain_loop(model_dir, examples, order, args.batch_size, args.steps, args.skip, 1e-4)
    plain = (plain_before + plain_after) / 2
    ray_tps = result.metrics["steady_tokens_per_s"]
    return {"overhead": round(1 - ray_tps / plain, 4), "ray_tokens_per_s": round(ray_tps, 1),
            "plain_tokens_per_s": round(plain, 1), "plain_before": round(plain_before, 1),
            "plain_after": round(plain_after, 1), "strategy": args.strategy, "steps": args.steps,
            "skip": args.skip, "batch_size": args.batch_size, "model": "llama 256x4",
            "ray_job_wall_s": round(ray_wall, 1)}


if __name__ == "__main__":
    main()
