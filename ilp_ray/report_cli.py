"""Terminal summary of an audit (rich tables)."""

from __future__ import annotations

from typing import Any


def print_summary(result: Any, top: int = 5) -> None:
    """Print overall and per-subset figures, the most severe unlearned items, and where to look."""
    from rich.console import Console
    from rich.table import Table

    s, v = result.summary, result.verdicts
    con = Console()
    if not con.is_terminal:  # a log file or a CI pipe: rich would assume 80 columns
        con = Console(width=140)
    t = Table(title=f"ILP audit: {s['n']} samples, {s['unlearned']} unlearned "
                    f"(pass@{s['pass_at_n']['n']} < {s['pass_at_n']['tau']})")
    cols = ["subset", "n", "accuracy", "acc_norm", "pass@N", "BoN", "unlearned", "learn rate"]
    has_base = "base_accuracy" in s
    if has_base:
        cols += ["base acc", "known by base", "JSD"]
    for c in cols:
        t.add_column(c, justify="left" if c == "subset" else "right")

    def row(name: str, b: dict) -> list[str]:
        r = [name, str(b["n"]), f"{b['accuracy']:.3f}", f"{b['accuracy_norm']:.3f}",
             f"{b['pass_at_n_mean']:.3f}", f"{b['bon_accuracy']:.3f}", str(b["unlearned"]),
             f"{b['learn_rate']:.3f}"]
        if has_base:
            r += [f"{b['base_accuracy']:.3f}", f"{b['known_by_base_rate']:.3f}", f"{b['js_base_sft_mean']:.3f}"]
        return r

    for name, b in s["per_subset"].items():
        t.add_row(*row(name, b))
    t.add_row(*row("[bold]all[/bold]", s), end_section=True)
    con.print(t)
    con.print(f"seed stability (Jaccard over seeds): {s['seed_stability']:.3f}   "
              f"truncated prompts: {s['truncated_items']}   "
              f"shards scored/reused: {s['shards_scored']}/{s['shards_reused']}   wall: {s['wall_s']:.1f} s")
    read = s.get("data_read")
    if read:
        turns = f", {read['conversation_turns']} of them conversation turns" if read["conversation_turns"] else ""
        ids = "; ids generated from the content (the data has none)" if read["ids_generated"] else ""
        con.print(f"data: {read['records']} samples from {read['rows']} rows, layout {read['format']}{turns}{ids}",
                  highlight=False)
        if read.get("warning"):
            con.print(f"[yellow]{read['warning']}.[/yellow]", highlight=False)
        if read["duplicate_contents"]:
            first = read["duplicates"][0]
            con.print(f"[yellow]{read['duplicate_contents']} samples repeat an earlier one's content (e.g. "
                      f"{first['at']} repeats {first['first']}); each is audited as its own sample.[/yellow]",
                      highlight=False)
    fair = s.get("fairness")
    if fair:
        style = "yellow" if fair["unfair"] else "green"
        con.print(f"[{style}]fairness: {fair['unfair']} of {s['n']} items won without the question "
                  f"(an option at >= {fair['threshold']} of the {fair['model']} model's prior: answer "
                  f"{fair['answer_wins']}, distractor {fair['distractor_wins']}); {fair['unlearned_unfair']} of them "
                  f"unlearned. Calibrated items: {s.get('calibrated_items', 0)}.[/{style}]", highlight=False)
    relaxed = {k: c for k, c in s.get("mc_fallback", {}).items() if k != "0"}
    if relaxed:
        con.print(f"[yellow]MC conversion relaxed the answer's form for {sum(relaxed.values())} items "
                  f"(same kind only: {relaxed.get('1', 0)}, any form: {relaxed.get('2', 0)}): too few answers "
                  "of their form in the data.[/yellow]", highlight=False)
    worst = v[v["unlearned"]].sort_values("severity_rank").head(top)
    if len(worst):
        w = Table(title=f"most severe unlearned (top {len(worst)} of {s['unlearned']})")
        for c in ("rank", "id", "question", "answer", "model's pick", "p(correct)"):
            w.add_column(c, overflow="fold")
        for _, r in worst.iterrows():
            w.add_row(str(r["severity_rank"]), str(r["id"]), _short(r["question"], 60),
                      _short(r["options"][r["answer"]], 30), _short(r["options"][r["pred"]], 30),
                      f"{r['pass_expected']:.3f}")
        con.print(w)
    ev = getattr(result, "evidence", None)
    if ev is not None:
        o = ev["overall"]
        con.print(f"corpus evidence of {o['n']} samples: {o['supports']} supported, {o['contradicts']} contradicted, "
                  f"{o['absent']} absent (non-existence rate {o['non_existence_rate']:.3f}, conflict rate "
                  f"{o['conflict_rate']:.3f}) -> {result.run_dir}/evidence/", highlight=False)
    if getattr(result, "diagnosis", None) is not None:
        from ilp_ray.diagnosis.run import print_result

        print_result(result.diagnosis)
    con.print(f"results: {result.run_dir}/verdicts/ (Parquet), {result.run_dir}/summary.json")
    if result.run_id:
        con.print(f"MLflow run {result.run_id}: mlflow ui --backend-store-uri {result.tracking_uri}")


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
