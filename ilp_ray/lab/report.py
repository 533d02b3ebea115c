"""The lab's console summary: the confusion matrix, the per-cause scores and where to look next."""

from __future__ import annotations

from typing import Any


def print_lab(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from ilp_ray.lab.score import confusion_frame

    m = result.metrics
    con = Console()
    cm = confusion_frame(m)
    t = Table(title="Unlearned samples: true category (rows) × diagnosed cause (columns)")
    t.add_column("true \\ cause")
    for c in cm.columns:
        t.add_column(str(c), justify="right")
    for cat, row in cm.iterrows():
        t.add_row(str(cat), *(str(int(x)) if x else "·" for x in row))
    con.print(t)
    s = Table(title="Per cause")
    for col in ("cause", "precision", "recall", "F1", "unlearned / samples (yield)"):
        s.add_column(col, justify="right" if col != "cause" else "left")
    for cat in ("I", "II", "III", "IV", "V"):
        n, y = m["samples"][cat], m["yield"][cat]
        s.add_row(cat, f"{m['precision'][cat]:.2f}", f"{m['recall'][cat]:.2f}", f"{m['f1'][cat]:.2f}",
                  f"{round(y * n)} / {n} ({y:.0%})")
    n, y = m["samples"]["control"], m["yield"]["control"]
    s.add_row("control", "", "", "", f"{round(y * n)} / {n} ({y:.0%})")
    con.print(s)
    ev = m.get("evidence", {})
    con.print(f"[bold]macro-F1 {m['macro_f1']:.3f}[/]  ·  wall {m['wall_s']:.0f} s  ·  corpus evidence "
              f"accuracy {ev.get('accuracy', float('nan')):.3f} (non-existence {ev.get('nonexistence_rate', 0):.3f} "
              f"vs true {ev.get('true_nonexistence_rate', 0):.3f}; conflict {ev.get('conflict_rate', 0):.3f} "
              f"vs true {ev.get('true_conflict_rate', 0):.3f})")
    con.print(f"metrics:   {result.out / 'metrics.json'}")
    if result.report:
        con.print(f"report:    {result.report}")
    if result.tracking_uri:
        con.print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri}  (then http://127.0.0.1:5000)")
