"""``ilp lab …``: the generated world where every unlearned sample's cause is known.

Typer only at import; the lab's modules load when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ilp_ray.errors import cli_fail

lab_app = typer.Typer(no_args_is_help=True, help="The ILP lab: a generated world, the audit scored against its truth.")


def _run(job, config: Path | None, set_: list[str], options: dict, progress: bool):
    """Load the ``LabConfig`` (YAML, then --set, then the command's options) and run ``job`` on
    it; a bad setting or input exits 2 with its message, having written nothing."""
    from ilp_ray.config import load_config, parse_overrides
    from ilp_ray.errors import IlpError
    from ilp_ray.lab.config import LabConfig

    over = {**parse_overrides(set_), **options}
    try:
        return job(load_config(LabConfig, config, over), progress=progress)
    except (IlpError, ValueError, NotImplementedError) as e:
        cli_fail(e)


@lab_app.command("run")
def run_cmd(
    seed: int = typer.Option(0, "--seed", help="World seed."),
    size: str = typer.Option("default", "--size", help="small (≤ 2 min) or default (≤ 10 min on 2 cores)."),
    base: str = typer.Option("tiny", "--base", help="tiny (pretrained from scratch) or smollm2."),
    out: str | None = typer.Option(None, "--out", help="Output folder; default runs/lab/<size>-seed<seed>."),
    config: Path | None = typer.Option(None, "--config", "-c", help="LabConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: --set sft.lr=5e-4"),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Generate a world, pretrain, fine-tune, audit, diagnose, and score the diagnosis against the truth."""
    from ilp_ray.lab.run import run_lab

    result = _run(run_lab, config, set_, {"seed": seed, "size": size, "base": base,
                                          "out": out or f"runs/lab/{size}-seed{seed}"}, progress)
    from ilp_ray.lab.report import print_lab

    print_lab(result)


experiment_app = typer.Typer(no_args_is_help=True, help="Experiments on the lab world.")
lab_app.add_typer(experiment_app, name="experiment")


@experiment_app.command("epochs-vs-cpt")
def epochs_vs_cpt_cmd(
    seed: int = typer.Option(0, "--seed", help="World seed."),
    size: str = typer.Option("default", "--size", help="small or default."),
    base: str = typer.Option("tiny", "--base", help="tiny or smollm2."),
    out: str | None = typer.Option(None, "--out", help="Output folder; default runs/lab/<size>-seed<seed>."),
    config: Path | None = typer.Option(None, "--config", "-c", help="LabConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: --set experiment_epochs_vs_cpt.cpt_epochs=50"),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """The paper's Table 4 alone: the lab's SFT vs 10 epochs vs knowledge CPT (λ = 0.2) then SFT, on
    the category I facts. The mitigations experiment with the knowledge_cpt arm only.
    """
    from ilp_ray.lab.mitigations import print_table4, run_mitigations

    result = _run(lambda cfg, progress: run_mitigations(cfg, progress, ["knowledge_cpt"]), config, set_,
                  {"seed": seed, "size": size, "base": base, "out": out or f"runs/lab/{size}-seed{seed}"}, progress)
    t4 = result.table.get("table4", {})
    if t4.get("rows"):
        print_table4(t4)
    else:
        print(t4.get("note", "no Table 4"))
    print(f"table: {result.out / 'table.json'}  ({result.wall_s:.0f} s)")


@experiment_app.command("mitigations")
def mitigations_cmd(
    seed: int = typer.Option(0, "--seed", help="World seed."),
    size: str = typer.Option("default", "--size", help="small or default."),
    base: str = typer.Option("tiny", "--base", help="tiny or smollm2."),
    arms: str | None = typer.Option(None, "--arms", help="Comma-separated arms (default: every arm)."),
    budget: str = typer.Option("paper", "--budget", help=(
        "paper: each arm trains as its algorithm says; matched: every arm's SFT takes progressive "
        "epochs' cap (4 × the lab's epochs), so the arms compare at equal training (table-matched.json).")),
    out: str | None = typer.Option(None, "--out", help="Output folder; default runs/lab/<size>-seed<seed>."),
    config: Path | None = typer.Option(None, "--config", "-c", help="LabConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a LabConfig field."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """The mitigation loop on the lab: every arm's recovery against the diagnosis and the truth."""
    from ilp_ray.lab.mitigations import BUDGETS, print_mitigations, run_mitigations

    if budget not in BUDGETS:
        raise typer.BadParameter(f"{budget!r} is not one of {', '.join(BUDGETS)}", param_hint="--budget")
    picked = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    result = _run(lambda cfg, progress: run_mitigations(cfg, progress, picked, budget=budget), config, set_,
                  {"seed": seed, "size": size, "base": base, "out": out or f"runs/lab/{size}-seed{seed}"}, progress)
    print_mitigations(result)
