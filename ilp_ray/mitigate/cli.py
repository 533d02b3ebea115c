"""``ilp mitigate plan|run|compare``: a thin shell over ``ilp_ray.mitigate``.

Only typer is imported here; the study's imports load when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ilp_ray.errors import cli_fail

mitigate_app = typer.Typer(no_args_is_help=True, help=(
    "What fixed it: plan the remedies of a diagnosed audit, train each arm on Ray Train + DeepSpeed, "
    "re-audit it on the same MC items, and compare by sample id."))

_RUN = typer.Option(..., "--run", help="The diagnosed audit run directory.")
_CONFIG = typer.Option(None, "--config", "-c", help="Mitigation config (YAML: MitigateConfig).")
_SET = typer.Option([], "--set", help="Override a field: --set dynamic_resample.delta=0.1")
_ARMS = typer.Option(None, "--arms", help="Comma-separated arms (default: every arm with targets).")
_OUT = typer.Option(None, "--out", help="Study directory (default: <audit>/mitigate).")


def _config(run: Path, config: Path | None, set_: list[str], arms: str | None, out: str | None):
    from ilp_ray.config import load_config, parse_overrides
    from ilp_ray.mitigate.config import MitigateConfig

    overrides = parse_overrides(set_)
    overrides["audit"] = str(run)
    if arms:
        overrides["arms"] = [a.strip() for a in arms.split(",") if a.strip()]
    if out:
        overrides["out"] = out
    return load_config(MitigateConfig, config, overrides)


def _errors():
    from ilp_ray.errors import IlpError

    return (IlpError, ValueError, KeyError, FileNotFoundError, RuntimeError)


def _print_plan(plan: dict, path: Path) -> None:
    typer.echo(f"plan: {path}")
    for name, arm in plan["arms"].items():
        what = f"skipped: {arm['skipped']}" if arm["skipped"] else "; ".join(arm["notes"]) or "planned"
        typer.echo(f"  {name:<20} cause {arm['cause'] or '-':<4} {len(arm['targets']):>4} targets  {what}")


@mitigate_app.command()
def plan(run: Path = _RUN, config: Path | None = _CONFIG, set_: list[str] = _SET, arms: str | None = _ARMS,
         out: str | None = _OUT) -> None:
    """Write plan.json: per arm its targets, data changes and training; edit it before `run`."""
    try:
        cfg = _config(run, config, set_, arms, out)
        from ilp_ray.mitigate.plan import make_plan

        path, p = make_plan(cfg)
    except _errors() as e:
        cli_fail(e)
        return
    _print_plan(p, path)


@mitigate_app.command("run")
def run_(run: Path = _RUN, config: Path | None = _CONFIG, set_: list[str] = _SET, arms: str | None = _ARMS,
         out: str | None = _OUT, replan: bool = typer.Option(False, help="Plan again even if plan.json exists."),
         progress: bool = typer.Option(True, help="Show progress per arm and stage.")) -> None:
    """Run the planned arms (planning first when there is no plan.json), then compare."""
    try:
        cfg = _config(run, config, set_, arms, out)
        from ilp_ray.mitigate.plan import PLAN, Study, make_plan
        from ilp_ray.mitigate.run import run_study

        study = Study.out_of(cfg)
        if replan or not (study / PLAN).is_file():
            path, p = make_plan(cfg)
            _print_plan(p, path)
        else:
            check_plan_settings(study / PLAN, cfg)
        result = run_study(study, cfg.arms, progress=progress)
    except _errors() as e:
        cli_fail(e)
        return
    _print_compare(result.compare)


def check_plan_settings(path: Path, cfg) -> None:
    """An existing plan.json made with other settings would silently ignore the new ones."""
    import json

    from ilp_ray.errors import ConfigError

    made = json.loads(path.read_text()).get("config") or {}
    now = cfg.model_dump(mode="json")
    changed = sorted(k for k in set(made) | set(now) if k != "arms" and made.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{path} was planned with other settings ({', '.join(changed)}); pass --replan to "
                          "plan again (an edited plan is then replaced), or run with its settings", file=str(path))


def _print_compare(cmp: dict | None) -> None:
    if not cmp:
        typer.echo("no arm finished")
        return
    arms = cmp["arms"]
    typer.echo("recovery matrix (share of each cause's unlearned samples recovered):")
    typer.echo("  cause  n    " + "  ".join(f"{a[:16]:>16}" for a in arms))
    for c in cmp["causes"]:
        cells = "  ".join(f"{'-' if cmp['matrix'][c][a] is None else format(cmp['matrix'][c][a], '.2f'):>16}"
                          for a in arms)
        typer.echo(f"  {c:<6} {cmp['unlearned_per_cause'][c]:<4} {cells}")
    typer.echo("  lost         " + "  ".join(f"{cmp['figures'][a]['lost']:>16}" for a in arms))
    typer.echo(f"report: {cmp['report']}")


@mitigate_app.command()
def compare(study: Path = typer.Argument(..., help="The study directory (with plan.json).")) -> None:
    """Transitions per sample and arm, the recovery matrix, and the report."""
    try:
        from ilp_ray.mitigate.compare import compare_study

        cmp = compare_study(study)
    except _errors() as e:
        cli_fail(e)
        return
    _print_compare(cmp)
