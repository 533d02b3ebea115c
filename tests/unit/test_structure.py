"""The data flows one way (DESIGN.md): no stage imports a later stage, or another stage's private names.

Every module's imports are read with ``ast``, the lazy ones inside functions included, and each
is checked against the layers below. A stage may import the foundation, any configuration module,
its own package and earlier stages; the orchestration (``pipeline``) runs the stages in order, and
no stage imports it; the shells and the lab sit on top, and only the shells (and the lab itself) import the lab; the
mitigation loop is imported by the shells and the lab's experiment only, and never knows the lab.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "ilp_ray"

# Shared by every layer; each imports only other foundation modules.
FOUNDATION = {"errors", "records", "registry", "config_base", "env", "storage", "neighbours", "llm_client",
              "metrics", "models", "track", "presets"}
# The stages, in the order data flows through them (DESIGN.md, "Data flow, one direction").
STAGES = ["data", "scoring", "detect", "audit", "train", "evidence", "diagnosis"]
# The orchestration on top of the stages: runs the audit, then evidence, then diagnosis. It may import
# every stage; no stage imports it.
ORCHESTRATION = "pipeline"
# Entry points and instruments: they may import any stage.
TOP = {"lab", "serve", "cli", "demo", "report_cli", "score_cli", "mitigate"}
SHELLS = {"cli", "demo"}  # the only modules outside lab/ that may import it


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield path, ["ilp_ray", *parts], path.name == "__init__.py"


def _imports(path: Path, name: list[str], is_pkg: bool):
    """(line, imported module, imported names) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_pkg else name[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod, [a.name for a in node.names]


def _unit(mod: str) -> str | None:
    """The top-level unit of an ``ilp_ray`` module: ``diagnosis``, ``config``, ``storage``..."""
    parts = mod.split(".")
    return parts[1] if parts[0] == "ilp_ray" and len(parts) > 1 else None


def _is_config(mod: str) -> bool:
    parts = mod.split(".")
    return mod in ("ilp_ray.config", "ilp_ray.config_base") or (len(parts) == 3 and parts[2] == "config")


def _violations():
    out = []
    for path, name, is_pkg in _modules():
        mod = ".".join(name)
        src = _unit(mod)
        if src is None:
            continue
        for line, target, names in _imports(path, name, is_pkg):
            dst = _unit(target)
            if dst is None or dst == src:
                continue
            where = f"{path.relative_to(ROOT.parent)}:{line}: {mod} imports {target}"
            if _is_config(mod) and not (_is_config(target) or dst in FOUNDATION):
                out.append(f"{where} (a config module imports configs and the foundation only)")
            elif src in FOUNDATION and dst not in FOUNDATION:
                out.append(f"{where} (the foundation imports the foundation only)")
            elif dst == "lab" and src not in SHELLS:
                out.append(f"{where} (only the lab and the shells know the lab)")
            elif dst == "mitigate" and src not in SHELLS | {"lab"}:
                out.append(f"{where} (only the shells and the lab run mitigations)")
            elif src in STAGES and dst in STAGES and STAGES.index(dst) > STAGES.index(src) \
                    and not _is_config(target):
                out.append(f"{where} (a later stage)")
            elif src in STAGES and dst == ORCHESTRATION:
                out.append(f"{where} (a stage imports the orchestration)")
            elif src == ORCHESTRATION and dst in TOP:
                out.append(f"{where} (the orchestration imports an entry point)")
            elif src in STAGES and dst in TOP:
                out.append(f"{where} (a stage imports an entry point)")
            if src in STAGES and dst in STAGES + [ORCHESTRATION] and not _is_config(target):
                private = [n for n in names if n.startswith("_")]
                if private or any(p.startswith("_") for p in target.split(".")[2:]):
                    out.append(f"{where} ({', '.join(private) or target}: another stage's private names)")
    return out


def test_every_unit_is_placed():
    units = {_unit(".".join(n)) for _, n, _ in _modules()} - {None}
    placed = FOUNDATION | set(STAGES) | {ORCHESTRATION} | TOP | {"config", "__main__"}
    assert units <= placed, units - placed


def test_the_data_flows_one_way():
    assert _violations() == []


def test_the_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The reader finds an import inside a function and resolves a relative one."""
    pkg = tmp_path / "ilp_ray" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "ilp_ray" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "late.py").write_text("def f():\n    from ilp_ray.diagnosis.run import run_diagnosis\n"
                                 "from ..pipeline.audit import _secret\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path / "ilp_ray")
    found = _violations()
    assert any("imports ilp_ray.diagnosis.run (a later stage)" in v for v in found), found
    assert any("imports ilp_ray.pipeline.audit (a stage imports the orchestration)" in v for v in found), found
    assert any("_secret: another stage's private names" in v for v in found), found


if __name__ == "__main__":  # pragma: no cover - a quick look at the graph
    pytest.main([__file__, "-q"])
