"""``ilp train sft|cpt``: a thin shell over ``ilp_ray.train.run.run_training``.

Only typer is imported here; torch, ray, deepspeed and transformers load when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ilp_ray.errors import cli_fail

train_app = typer.Typer(no_args_is_help=True, help="Train on Ray Train + DeepSpeed: SFT (with learning "
                        "trajectories) and continued pretraining.")


def _run(kind: str, config: Path, set_: list[str]) -> None:
    from ilp_ray.config import load_config, parse_overrides
    from ilp_ray.errors import IlpError
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

    try:
        cfg = load_config(SftTrainConfig if kind == "sft" else CptTrainConfig, config, parse_overrides(set_))
        from ilp_ray.train.run import run_training

        result = run_training(cfg)
    except (IlpError, ValueError, KeyError, FileNotFoundError) as e:
        cli_fail(e)
    m = result.metrics
    typer.echo(f"trained to step {m.get('step')} (loss {m.get('loss', float('nan')):.4f}); "
               f"checkpoint {result.checkpoint} (id {result.checkpoint_id})")
    if result.trajectory is not None:
        typer.echo(f"trajectory: {result.trajectory}")


_CONFIG = typer.Option(..., "--config", "-c", help="Training config (YAML).")
_SET = typer.Option([], "--set", help="Override any config field: --set optim.lr=1e-4")


@train_app.command()
def sft(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
    """Supervised fine-tuning (loss on response tokens) with per-sample learning trajectories."""
    _run("sft", config, set_)


@train_app.command()
def cpt(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
    """Continued pretraining on a D_k / D_general document mixture, packed into blocks."""
    _run("cpt", config, set_)
