"""GPU checks of the training engine and the transformers scoring engine (docs/gpu.md).

Three parts, each writing ``<out>/<part>.json`` and printing a short summary last:

``strategy``  the project's ``make_strategy`` + loop helpers driven directly in one process
              (torch.distributed, world size 1: NCCL on CUDA, gloo on CPU): DeepSpeed ZeRO-2/ZeRO-1
              in bf16 and fp32, and DDP. Per variant: the loss over N steps, a checkpoint written
              by ``state.save_checkpoint`` and read back into a fresh model + engine, and the
              next steps run from the live engine and from the reloaded one (they must agree).
              Also the loop's window-loss all-reduce on the group's device.
``ray``       ``run_training`` itself on Ray Train (``scaling.use_gpu``), for several engines,
              then a resumed run (more epochs, same name) from the last checkpoint; the final
              checkpoint is audited with the transformers engine.
``score``     MC option log-likelihoods of checkpoints with the transformers engine (packed and
              cache strategies) and the naive reference, on CPU fp32, CUDA fp32 and CUDA bf16,
              compared with CPU fp32: log-likelihoods, option probabilities, predictions,
              pass@5 and the unlearned verdict (pass@5 < 0.2).

    python bench/gpu_check.py strategy --out DIR [--device cpu] [--steps 60]
    python bench/gpu_check.py ray --out DIR [--cpu] [--epochs 20]
    python bench/gpu_check.py score --out DIR --ckpt NAME=PATH ... [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FACTS = ROOT / "ilp_ray" / "demo" / "facts.jsonl"
TINY = {"hidden_size": 64, "num_layers": 2, "vocab_size": 512, "seed": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sft_cfg(**over):
    from ilp_ray.train.config import SftTrainConfig

    cfg = {"data": str(FACTS), "run_dir": "/tmp/ilp-gpu-check/runs", "name": "x",
           "model": {"tiny": dict(TINY)}, "optim": {"lr": 3e-3, "batch_size": 8, "epochs": 20},
           "checkpoint": {"every_steps": 40}, "trajectory": {"embedder": "hashing", "k": 4},
           "tracking": {"enabled": False}, "timing_skip_steps": 3}
    for key, value in over.items():
        node = cfg
        *head, last = key.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return SftTrainConfig.model_validate(cfg)


# --------------------------------------------------------------------------------------- strategy

STRATEGY_VARIANTS = [  # (label, engine.strategy, zero_stage, precision)
    ("zero2-bf16", "deepspeed", None, None),   # the GPU default
    ("zero1-bf16", "deepspeed", 1, "bf16"),
    ("zero2-fp32", "deepspeed", 2, "fp32"),
    ("zero1-fp32", "deepspeed", 1, "fp32"),   # the CPU default
    ("ddp-fp32", "ddp", None, None),
]


def part_strategy(args) -> dict:
    import torch
    import torch.distributed as dist

    from ilp_ray.data import read_sft
    from ilp_ray.models.tiny import make_tiny_llama, make_tiny_tokenizer
    from ilp_ray.train import loop as L
    from ilp_ray.train.run import training_texts

    use_gpu = args.device == "cuda"
    backend = "nccl" if use_gpu else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    if use_gpu:
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    out: dict = {"backend": backend, "variants": {}}

    # The loop's window-loss all-reduce (world > 1 path) on a one-rank group: the old code put
    # the tensor on the CPU, which an NCCL group refuses.
    win = {"t": time.perf_counter() - 1, "tokens": 10, "loss": 3.0, "n": 2}
    for label, device in (("cpu_tensor", None), ("model_device", torch.device(args.device))):
        try:
            m = L._window_metrics(dict(win), 2, 1e-3, 0, device)
            out[f"window_allreduce_{label}"] = {"ok": True, "loss": m["loss"]}
        except Exception as e:
            out[f"window_allreduce_{label}"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}

    records = read_sft(str(FACTS))
    tmp = Path(tempfile.mkdtemp(prefix="ilp-gpu-strategy-"))
    tok = make_tiny_tokenizer(training_texts("sft", {"records": records}), vocab_size=TINY["vocab_size"])
    init = tmp / "init"
    make_tiny_llama(tok, seed=0, hidden_size=TINY["hidden_size"], num_layers=TINY["num_layers"]).save_pretrained(init)
    tok.save_pretrained(init)
    for label, strat, stage, precision in STRATEGY_VARIANTS:
        if args.only and label not in args.only:
            continue
        rec: dict = {}
        out["variants"][label] = rec
        try:
            cfg = _sft_cfg(**{"engine.strategy": strat, "engine.zero_stage": stage, "engine.precision": precision,
                              "optim.max_steps": args.steps + args.extra})
            _strategy_variant(rec, cfg, records, tok, init, tmp / f"ckpt-{label}", label, use_gpu, args)
        except Exception as e:
            rec["ok"] = False
            rec["error"] = traceback.format_exc()[-3000:]
            print(f"[{label}] FAILED: {e}", flush=True)
        gc.collect()
        if use_gpu:
            torch.cuda.empty_cache()
    dist.destroy_process_group()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _strategy_variant(rec: dict, cfg, records, tok, init: Path, ck: Path, label: str, use_gpu: bool, args) -> None:
    """Train ``args.steps`` steps, save, run ``args.extra`` more live and from the reloaded checkpoint."""
    import numpy as np
    import torch

    from ilp_ray.data import HashingEmbedder, build_mc_items
    from ilp_ray.train import loop as L
    from ilp_ray.train import state as S
    from ilp_ray.train.strategy import engine_defaults, lr_at, make_strategy
    from ilp_ray.train.tasks import build_task
    from ilp_ray.train.trajectory import TrajectoryEvaluator

    rec["zero_stage, precision"] = list(engine_defaults(cfg.engine, use_gpu))
    task = build_task("sft", cfg, {"records": records}, tok)
    examples = task.examples(0)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(examples), cfg.optim.batch_size, replace=False).tolist()
               for _ in range(args.steps + args.extra)]
    total = len(batches)

    def build(path):
        torch.manual_seed(0)
        model, tokenizer = L._load(path, use_gpu)
        return model, tokenizer, make_strategy(model, cfg.optim, cfg.engine, use_gpu, cfg.optim.batch_size, 1)

    def run(strategy, model, steps):
        losses = []
        for step in steps:
            batch = L._collate([examples[i] for i in batches[step]], tok.pad_token_id, model)
            strategy.set_lr(lr_at(step, total, cfg.optim))
            loss = strategy.forward(**batch).loss
            strategy.backward_step(loss)
            losses.append(float(loss.detach()))
        return losses

    if use_gpu:
        torch.cuda.reset_peak_memory_stats()
    model, tokenizer, strategy = build(init)
    p = next(strategy.module.parameters())
    rec["param"] = {"dtype": str(p.dtype), "device": str(p.device)}
    rec["engine_class"] = type(getattr(strategy, "engine", strategy)).__name__
    rec["optimizer_class"] = type(strategy.optimizer).__name__
    t0 = time.perf_counter()
    losses = run(strategy, model, range(args.steps))
    if use_gpu:
        torch.cuda.synchronize()
    rec["seconds_per_step"] = (time.perf_counter() - t0) / args.steps
    rec["loss_first5"] = float(np.mean(losses[:5]))
    rec["loss_last5"] = float(np.mean(losses[-5:]))
    rec["loss_every10"] = [round(x, 4) for x in losses[::10]]
    rec["loss_finite"] = bool(np.isfinite(losses).all())

    # The live module in eval mode through the audit core (what trajectories do).
    items = build_mc_items(records, k=4, seed=0, embedder=HashingEmbedder())[:32]
    ev = TrajectoryEvaluator(items, {e.id: e for e in examples}, tok, task.format, 16, cfg.sft.max_length,
                             tok.pad_token_id).evaluate(strategy.module, args.steps, 0, "check")
    rec["trajectory_eval"] = {"acc": float(np.mean([r["correct"] for r in ev.rows])),
                              "mean_loss": float(np.mean([r["loss"] for r in ev.rows])),
                              "back_in_train_mode": bool(strategy.module.training)}

    t0 = time.perf_counter()
    S.save_checkpoint(ck, rank=0, module=strategy.module, tokenizer=tokenizer, strategy=strategy,
                      train_state={"step": args.steps}, marker={"id": label, "step": args.steps})
    rec["save_seconds"] = time.perf_counter() - t0
    rec["saved_files"] = sorted(str(f.relative_to(ck)) for f in ck.rglob("*") if f.is_file())
    rec["saved_config_dtype"] = json.loads((ck / "config.json").read_text()).get("dtype")
    saved = {k: v.detach().float().cpu().clone() for k, v in strategy.module.state_dict().items()}
    live = run(strategy, model, range(args.steps, total))
    del strategy, model
    gc.collect()

    model2, _, strategy2 = build(ck)
    strategy2.load(ck / S.ENGINE)
    reloaded = {k: v.detach().float().cpu() for k, v in strategy2.module.state_dict().items()}
    rec["reload_max_abs_param_diff"] = max(float((saved[k] - reloaded[k]).abs().max()) for k in saved)
    again = run(strategy2, model2, range(args.steps, total))
    rec["continued_losses_live"] = [round(x, 5) for x in live]
    rec["continued_losses_reloaded"] = [round(x, 5) for x in again]
    rec["continued_max_abs_diff"] = float(np.max(np.abs(np.array(live) - np.array(again))))
    if use_gpu:
        rec["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    rec["ok"] = (rec["loss_finite"] and rec["loss_last5"] < 0.5 * rec["loss_first5"]
                 and rec["continued_max_abs_diff"] < 0.05)


# ------------------------------------------------------------------------------------------- ray

RAY_RUNS = [  # (name, overrides)
    ("zero2-bf16", {}),
    ("zero1-bf16", {"engine.zero_stage": 1}),
    ("zero2-fp32", {"engine.precision": "fp32"}),
    ("ddp-fp32", {"engine.strategy": "ddp"}),
]


def _audit(ckpt: str, device: str) -> dict:
    import numpy as np
    import torch

    from ilp_ray.data import HashingEmbedder, build_mc_items, read_sft
    from ilp_ray.metrics import accuracy, option_probs, pad_ragged
    from ilp_ray.models import load_model
    from ilp_ray.scoring.hf import TransformersEngine

    model, tok = load_model(ckpt, dtype=torch.float32)
    items = build_mc_items(read_sft(str(FACTS)), k=4, seed=1, embedder=HashingEmbedder())
    scores = TransformersEngine((model.to(device), tok), fmt="chat").score(items)
    probs = option_probs(pad_ragged([s.logprob_sum for s in scores], -np.inf))
    return {"device": device, "accuracy": accuracy(probs, np.array([it.answer for it in items])), "n": len(items)}


def part_ray(args) -> dict:
    import pandas as pd
    import torch

    from ilp_ray.train.run import run_training

    use_gpu = not args.cpu
    root = Path(args.run_dir)
    shutil.rmtree(root, ignore_errors=True)
    out: dict = {"use_gpu": use_gpu, "runs": {}}
    plan = [(n, o) for n, o in RAY_RUNS if not args.only or n in args.only]
    plan.insert(1, ("zero2-bf16", {"optim.epochs": args.epochs + 5, "_resume": True}))
    for name, over in plan:
        over = dict(over)
        resumed = over.pop("_resume", False)
        key = name + ("+resume" if resumed else "")
        if resumed and (args.only and name not in args.only):
            continue
        rec: dict = {}
        out["runs"][key] = rec
        try:
            kw = {"run_dir": str(root), "name": name, "scaling.use_gpu": use_gpu, "optim.epochs": args.epochs,
                  "scaling.cpus_per_worker": 1.0, **over}
            cfg = _sft_cfg(**kw)
            t0 = time.perf_counter()
            res = run_training(cfg)
            rec["seconds"] = time.perf_counter() - t0
            rec["metrics"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.metrics.items()}
            run_path = res.run_path
            resumes = run_path / "ilp_logs" / "resumes.jsonl"
            rec["resumes"] = [json.loads(x) for x in resumes.read_text().splitlines()] if resumes.is_file() else []
            ck = Path(res.checkpoint)
            rec["checkpoint"] = str(ck)
            rec["checkpoint_files"] = sorted(str(f.relative_to(ck)) for f in ck.rglob("*") if f.is_file())
            rec["checkpoint_dtype"] = json.loads((ck / "config.json").read_text()).get("dtype")
            ckpts = sorted(p.name for p in run_path.glob("checkpoint_step*"))
            rec["checkpoints"] = ckpts
            if res.trajectory is not None:
                t = pd.read_parquet(res.trajectory)
                g = t.groupby("step").agg(loss=("loss", "mean"), p_correct=("p_correct", "mean"),
                                          acc=("correct", "mean"))
                rec["trajectory"] = {int(s): {k: round(float(v), 4) for k, v in row.items()}
                                     for s, row in g.iterrows()}
            rec["audit"] = [_audit(str(ck), "cpu")] + ([_audit(str(ck), "cuda")] if use_gpu else [])
            traj = rec.get("trajectory") or {}
            steps = sorted(traj)
            rec["ok"] = bool(steps) and traj[steps[-1]]["loss"] < 0.5 * traj[steps[0]]["loss"]
            if resumed:
                rec["ok"] = rec["ok"] and bool(rec["resumes"]) and rec["metrics"].get("step") == \
                    (args.epochs + 5) * 9
        except Exception as e:
            rec["ok"] = False
            rec["error"] = traceback.format_exc()[-4000:]
            print(f"[{key}] FAILED: {e}", flush=True)
        if use_gpu:
            torch.cuda.empty_cache()
    if args.keep:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
        for key, rec in out["runs"].items():
            if "checkpoint" in rec and "+" not in key:
                shutil.copytree(rec["checkpoint"], keep / key, ignore=shutil.ignore_patterns("engine"),
                                dirs_exist_ok=True)
    return out


# ----------------------------------------------------------------------------------------- score

def _verdicts(scores, items, n=5, tau=0.2, seed=0):
    import numpy as np

    from ilp_ray.metrics import (
        item_uniforms,
        option_probs,
        pad_ragged,
        pass_at_n_sampled,
        pass_expected,
        sample_draws,
    )

    sums = pad_ragged([s.logprob_sum for s in scores], -np.inf)
    probs = option_probs(sums)
    answers = np.array([it.answer for it in items])
    draws = sample_draws(probs, item_uniforms([it.id for it in items], n, seed))
    pass_n = pass_at_n_sampled(draws, answers)
    return {"sums": sums, "probs": probs, "pred": probs.argmax(1), "pass_n": pass_n,
            "unlearned": pass_n < tau, "pass_expected": pass_expected(probs, answers), "answers": answers}


def _compare(a, b) -> dict:
    import numpy as np

    finite = np.isfinite(a["sums"])
    return {"max_abs_loglik": float(np.abs(a["sums"][finite] - b["sums"][finite]).max()),
            "max_rel_loglik": float((np.abs(a["sums"][finite] - b["sums"][finite])
                                     / np.maximum(np.abs(a["sums"][finite]), 1e-9)).max()),
            "max_abs_prob": float(np.abs(a["probs"] - b["probs"]).max()),
            "pred_agree": float((a["pred"] == b["pred"]).mean()),
            "pass5_agree": float((a["pass_n"] == b["pass_n"]).mean()),
            "unlearned_agree": float((a["unlearned"] == b["unlearned"]).mean()),
            "max_abs_pass_expected": float(np.abs(a["pass_expected"] - b["pass_expected"]).max())}


def part_score(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ilp_ray.data import HashingEmbedder, build_mc_items, read_sft
    from ilp_ray.models.tiny import save_tiny_checkpoint
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.scoring.naive import NaiveEngine

    items = build_mc_items(read_sft(str(FACTS)), k=4, seed=1, embedder=HashingEmbedder())
    ckpts = dict(c.split("=", 1) for c in args.ckpt)
    if "random" not in ckpts and not args.skip_random:  # an untrained tiny Llama with a wide init: far from uniform predictions
        texts = [f"Question: {r.prompt}\nAnswer: {r.response}" for r in read_sft(str(FACTS))]
        ckpts["random"] = str(save_tiny_checkpoint(Path(tempfile.mkdtemp()) / "random", texts, seed=3,
                                                   initializer_range=0.2, hidden_size=128, num_layers=4,
                                                   num_heads=4, num_kv_heads=2))
    devices = ["cpu"] + (["cuda"] if args.device == "cuda" else [])
    out: dict = {"n_items": len(items), "results": {}, "raw": {}}
    for cname, path in ckpts.items():
        tok = AutoTokenizer.from_pretrained(path)
        for fmt in ("chat", "lm-eval"):
            runs = {}
            for device in devices:
                for dtype in ("fp32", "bf16") if device == "cuda" else ("fp32",):
                    for attn in ("sdpa", "eager"):
                        model = AutoModelForCausalLM.from_pretrained(
                            path, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype],
                            attn_implementation=attn).to(device).eval()
                        for ename in ("packed", "cache") if attn == "eager" else ("packed", "cache", "naive"):
                            label = f"{device}/{dtype}/{attn}/{ename}"
                            try:
                                t0 = time.perf_counter()
                                engine = (NaiveEngine((model, tok), fmt=fmt) if ename == "naive" else
                                          TransformersEngine((model, tok), fmt=fmt, strategy=ename))
                                scores = engine.score(items)
                                if device == "cuda":
                                    torch.cuda.synchronize()
                                runs[label] = _verdicts(scores, items)
                                runs[label]["seconds"] = time.perf_counter() - t0
                            except Exception:
                                runs[label] = {"error": traceback.format_exc()[-2000:]}
                        del model
            ref = runs["cpu/fp32/sdpa/packed"]
            res = {}
            for label, r in runs.items():
                if "error" in r:
                    res[label] = {"error": r["error"]}
                    continue
                res[label] = {**_compare(r, ref), "accuracy": float((r["pred"] == r["answers"]).mean()),
                              "unlearned_share": float(r["unlearned"].mean()), "seconds": round(r["seconds"], 3)}
                out["raw"][f"{cname}/{fmt}/{label}"] = r["sums"].tolist()
            out["results"][f"{cname}/{fmt}"] = res
    return out


# ------------------------------------------------------------------------------------------ main

def _summary(part: str, res: dict) -> list[str]:
    lines = []
    if part == "strategy":
        for k in ("window_allreduce_cpu_tensor", "window_allreduce_model_device"):
            lines.append(f"{k}: {res.get(k)}")
        for label, r in res["variants"].items():
            if "error" in r:
                lines.append(f"{label:12s} ERROR {r['error'].strip().splitlines()[-1][:200]}")
                continue
            lines.append(f"{label:12s} ok={r['ok']} {r['zero_stage, precision']} {r['param']['dtype']} "
                         f"{r['engine_class']}/{r['optimizer_class']} loss {r['loss_first5']:.3f}->{r['loss_last5']:.3f} "
                         f"step {1e3 * r['seconds_per_step']:.1f}ms reload_dparam={r['reload_max_abs_param_diff']:.2e} "
                         f"cont_diff={r['continued_max_abs_diff']:.2e} saved_dtype={r['saved_config_dtype']} "
                         f"mem={r.get('peak_mem_mib', 0):.0f}MiB")
    elif part == "ray":
        for key, r in res["runs"].items():
            if "error" in r:
                lines.append(f"{key:18s} ERROR {r['error'].strip().splitlines()[-1][:300]}")
                continue
            traj = r.get("trajectory") or {}
            st = sorted(traj)
            tl = f"traj loss {traj[st[0]]['loss']:.3f}@{st[0]}->{traj[st[-1]]['loss']:.3f}@{st[-1]}" if st else "no traj"
            m = r["metrics"]
            lines.append(f"{key:18s} ok={r['ok']} {r['seconds']:.0f}s step={m.get('step')} loss={m.get('loss')} "
                         f"tok/s={m.get('steady_tokens_per_s')} {tl} dtype={r['checkpoint_dtype']} "
                         f"resumes={r['resumes']} audit={[(a['device'], round(a['accuracy'], 3)) for a in r['audit']]}")
    else:
        for key, rs in res["results"].items():
            for label, r in rs.items():
                if "error" in r:
                    lines.append(f"{key:20s} {label:24s} ERROR {r['error'].strip().splitlines()[-1][:200]}")
                    continue
                lines.append(f"{key:20s} {label:24s} dLL={r['max_abs_loglik']:.2e} rel={r['max_rel_loglik']:.1e} "
                             f"dP={r['max_abs_prob']:.2e} pred={r['pred_agree']:.3f} pass5={r['pass5_agree']:.3f} "
                             f"unl={r['unlearned_agree']:.3f} acc={r['accuracy']:.3f} t={r['seconds']}s")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["strategy", "ray", "score"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--cpu", action="store_true", help="ray: use_gpu=False")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--extra", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--run-dir", default="/tmp/ilp-gpu-check/runs")
    ap.add_argument("--keep", help="ray: copy the final checkpoints (HF part) here")
    ap.add_argument("--ckpt", nargs="*", default=[], help="score: NAME=PATH checkpoints")
    ap.add_argument("--skip-random", action="store_true", help="score: no untrained wide-init tiny Llama")
    args = ap.parse_args()
    from ilp_ray.env import apply_defaults

    apply_defaults()
    import torch

    t0 = time.perf_counter()
    res = {"strategy": part_strategy, "ray": part_ray, "score": part_score}[args.part](args)
    res["wall_s"] = time.perf_counter() - t0
    res["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for mod in ("deepspeed", "ray", "transformers", "pydantic"):
        with contextlib.suppress(Exception):
            res["versions"][mod] = __import__(mod).__version__
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.part}.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"== {args.part} ({res['wall_s']:.0f}s) {res['versions']}")
    print("\n".join(_summary(args.part, res)), flush=True)


if __name__ == "__main__":
    main()
