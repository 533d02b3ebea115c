"""``ilp corpus …``: build a pretraining-corpus index, search it, and judge an SFT set against it.

Typer only at import; each command imports what it needs when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ilp_ray.errors import cli_fail

corpus_app = typer.Typer(no_args_is_help=True, help="Pretraining-corpus evidence: index, search, evidence.")


def _overrides(set_: list[str], index: str | None, backend: str | None) -> dict:
    from ilp_ray.config import parse_overrides

    out = parse_overrides(set_)
    if index is not None:
        out["index.location"] = index
    if backend is not None:
        out["index.backend"] = backend
    return out


@corpus_app.command("index")
def index_cmd(
    input_: list[str] = typer.Option(..., "--input", "-i", help="Corpus files, directories or globs (repeatable)."),
    index: str | None = typer.Option(None, "--index", help="Index directory (tantivy) or name (elasticsearch)."),
    backend: str | None = typer.Option(None, "--backend", help="tantivy (default) or elasticsearch."),
    config: Path | None = typer.Option(None, "--config", "-c", help="CorpusConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: --set chunk.words=80"),
    progress: bool = typer.Option(True, help="Print progress to stderr."),
) -> None:
    """Index corpus files (JSONL text/id, Parquet, txt blocks) as passages; re-runs skip finished files."""
    from ilp_ray.config import load_config
    from ilp_ray.errors import IlpError
    from ilp_ray.evidence.config import CorpusConfig

    try:
        cfg = load_config(CorpusConfig, config, _overrides(set_, index, backend))
        from ilp_ray.evidence.ingest import ingest

        report = ingest(input_, cfg.index, cfg.chunk, cfg.ingest, progress=progress)
    except (IlpError, ValueError, KeyError) as e:
        cli_fail(e)
        return
    typer.echo(json.dumps(report))


@corpus_app.command("search")
def search_cmd(
    query: list[str] = typer.Argument(..., help="Query text (one or more queries)."),
    index: str | None = typer.Option(None, "--index", help="Index directory or name."),
    backend: str | None = typer.Option(None, "--backend", help="tantivy (default) or elasticsearch."),
    k: int = typer.Option(5, "-k", min=1, help="Hits per query."),
    config: Path | None = typer.Option(None, "--config", "-c", help="CorpusConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a field."),
) -> None:
    """BM25 search for people: print the top-k passages of each query."""
    from ilp_ray.config import load_config
    from ilp_ray.errors import IlpError
    from ilp_ray.evidence.config import CorpusConfig

    try:
        cfg = load_config(CorpusConfig, config, _overrides(set_, index, backend))
        from ilp_ray.evidence.index import open_index

        with open_index(cfg.index, must_exist=True) as ix:
            results = ix.search(query, k)
    except (IlpError, ValueError, KeyError) as e:
        cli_fail(e)
        return
    for q, hits in zip(query, results, strict=True):
        typer.echo(f"# {q}")
        for r, h in enumerate(hits, 1):
            typer.echo(f"{r:>3}  {h.score:7.3f}  {h.doc_id}  {h.text[:160]}")
        if not hits:
            typer.echo("     (no hits)")


@corpus_app.command("evidence")
def evidence_cmd(
    data: str | None = typer.Option(None, "--data", help="SFT dataset (JSONL, Parquet, CSV)."),
    index: str | None = typer.Option(None, "--index", help="Index directory or name."),
    out: str | None = typer.Option(None, "--out", help="Output directory."),
    backend: str | None = typer.Option(None, "--backend", help="tantivy (default) or elasticsearch."),
    config: Path | None = typer.Option(None, "--config", "-c", help="EvidenceConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: --set retrieve.k=50"),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Per-item corpus evidence (supports / contradicts / absent), the non-existence and conflict rates."""
    from ilp_ray.config import load_config
    from ilp_ray.errors import IlpError
    from ilp_ray.evidence.config import EvidenceConfig

    try:
        overrides = _overrides(set_, index, backend)
        for key, value in (("data", data), ("out", out)):
            if value is not None:
                overrides[key] = value
        cfg = load_config(EvidenceConfig, config, overrides)
        from ilp_ray.evidence.run import run_evidence

        summary = run_evidence(cfg, progress=progress)
    except (IlpError, ValueError, KeyError, FileNotFoundError) as e:
        cli_fail(e)
        return
    o = summary["overall"]
    typer.echo(f"{o['n']} items: {o['supports']} supported, {o['contradicts']} contradicted, {o['absent']} absent "
               f"(non-existence rate {o['non_existence_rate']:.3f}, conflict rate {o['conflict_rate']:.3f})")
    typer.echo(f"evidence table for diagnosis: {summary['outputs']['corpus_evidence']}")
