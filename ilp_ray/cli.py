"""The ``ilp`` command. A thin shell: parse, build the config, call the core, print the result.

Only typer is imported at module level, so ``ilp --help`` is instant; every command imports what
it needs when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ilp_ray.errors import cli_fail

app = typer.Typer(
    name="ilp", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Audit LLM supervised fine-tuning: which samples did the model fail to learn, and why.")


@app.command()
def audit(
    config: Path | None = typer.Option(None, "--config", "-c", help="Audit config (YAML)."),
    data: str | None = typer.Option(None, help=(
        "SFT dataset: JSONL, Parquet, CSV (path or URI), a saved HF dataset or Parquet shards.")),
    data_format: str | None = typer.Option(None, "--data-format", help=(
        "Layout of the rows: auto (read from the fields), ilp, messages, prompt-completion, alpaca, sharegpt.")),
    sft_model: str | None = typer.Option(None, "--sft-model", help="Fine-tuned model: checkpoint dir or bundled name."),
    base_model: str | None = typer.Option(None, "--base-model", help="Base model before SFT."),
    run_dir: str | None = typer.Option(None, "--run-dir", help="Output directory."),
    set_: list[str] = typer.Option([], "--set", help="Override any config field: --set detect.tau=0.3"),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Find the samples a fine-tuned model failed to learn (pass@N under BoN-N), with base-model probing."""
    from ilp_ray.config import AuditConfig, load_config, parse_overrides
    from ilp_ray.errors import IlpError

    try:
        overrides = parse_overrides(set_)
        for key, value in (("data", data), ("data_format", data_format), ("sft_model", sft_model),
                           ("base_model", base_model), ("run_dir", run_dir)):
            if value is not None:
                overrides[key] = value
        cfg = load_config(AuditConfig, config, overrides)
        from ilp_ray.pipeline.audit import run_audit

        result = run_audit(cfg, progress=progress)
    except (IlpError, ValueError, FileNotFoundError) as e:
        cli_fail(e)
        return
    from ilp_ray.report_cli import print_summary

    print_summary(result)


@app.command()
def score(
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint dir or bundled name (smollm2-135m)."),
    items: Path = typer.Option(..., "--items", help="MC items, JSONL rows {id, question, options, answer}."),
    out: Path = typer.Option(..., "--out", help="Where to write one JSON row per item."),
    fmt: str = typer.Option("lm-eval", "--format", help="Prompt format: chat, plain or lm-eval."),
    engine: str = typer.Option("transformers", help="Scoring engine."),
    batch_size: int = typer.Option(16, help="Items per forward batch."),
    max_length: int | None = typer.Option(None, help="Token budget; prompts are left-truncated."),
    temperature: float = typer.Option(1.0, help="Softmax temperature for probs."),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)."),
    vllm_args: str = typer.Option("{}", "--vllm-args", help=(
        "For --engine vllm: keyword arguments of vllm.LLM as a YAML mapping, e.g. '{enforce_eager: true}'.")),
) -> None:
    """Score ready MC items with one checkpoint: log-likelihoods, probabilities, acc and acc_norm argmax."""
    import yaml

    from ilp_ray.config import ScoringConfig
    from ilp_ray.errors import IlpError

    try:
        extra = yaml.safe_load(vllm_args) or {}
    except yaml.YAMLError:
        extra = None
    if not isinstance(extra, dict):
        cli_fail(ValueError(f"--vllm-args: expected a YAML mapping such as '{{enforce_eager: true}}', got {vllm_args!r}"))
        return
    try:
        cfg = ScoringConfig(engine=engine, format=fmt, batch_size=batch_size, max_length=max_length,
                            temperature=temperature, vllm_args=extra)
    except Exception as e:  # pydantic's message names the field
        cli_fail(ValueError(str(e).splitlines()[0] + ": " + " ".join(str(e).splitlines()[1:3])))
        return
    try:
        from ilp_ray.score_cli import score_file

        n, truncated = score_file(model, items, out, cfg, threads=threads or None)
    except (IlpError, ValueError, KeyError, FileNotFoundError) as e:
        cli_fail(e)
        return
    typer.echo(f"scored {n} items -> {out} ({truncated} prompt(s) left-truncated)")


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Run directory."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Audit the bundled SmolLM2-135M-Instruct on the bundled demo facts, end to end on local Ray."""
    from ilp_ray.config import AuditConfig
    from ilp_ray.demo import demo_config
    from ilp_ray.pipeline.audit import run_audit
    from ilp_ray.report_cli import print_summary

    cfg: AuditConfig = demo_config(out)
    print_summary(run_audit(cfg, progress=progress))


@app.command()
def diagnose(
    run: Path = typer.Option(..., "--run", help="An audit run directory (with verdicts/)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Diagnosis config (YAML: DiagnosisConfig)."),
    trajectory: str | None = typer.Option(None, "--trajectory", help="trajectory.parquet of the SFT run."),
    data: str | None = typer.Option(None, "--data", help="The SFT data file (free-form responses)."),
    set_: list[str] = typer.Option([], "--set", help="Override any field: --set conflict.theta=0.9"),
) -> None:
    """Attribute every unlearned sample of an audit run to one of five causes, with its evidence."""
    from ilp_ray.config import load_config, parse_overrides
    from ilp_ray.diagnosis.config import DiagnosisConfig
    from ilp_ray.errors import IlpError

    try:
        overrides = parse_overrides(set_)
        for key, value in (("trajectory", trajectory), ("data", data)):
            if value is not None:
                overrides[key] = value
        cfg = load_config(DiagnosisConfig, config, overrides)
        from ilp_ray.diagnosis.run import print_result, run_diagnosis

        result = run_diagnosis(run, cfg)
    except (IlpError, ValueError, KeyError, FileNotFoundError, RuntimeError) as e:  # Runtime: the judge
        cli_fail(e)
        return
    print_result(result)


from ilp_ray.train.cli import train_app  # noqa: E402  (typer only; training imports load per command)

app.add_typer(train_app, name="train")

from ilp_ray.evidence.cli import corpus_app  # noqa: E402  (typer only; corpus imports load per command)

app.add_typer(corpus_app, name="corpus")

from ilp_ray.lab.cli import lab_app  # noqa: E402  (typer only; the lab loads per command)
from ilp_ray.mitigate.cli import mitigate_app  # noqa: E402  (typer only; a study loads per command)

app.add_typer(lab_app, name="lab")
app.add_typer(mitigate_app, name="mitigate")


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
