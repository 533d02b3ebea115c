"""Training trajectories for causes IV and V: load, validate, and summarise per sample.

The table comes from the SFT job (``ilp_ray.train.trajectory``): one row per (evaluation, sample)
with ``step, epoch, reason, id, subset, p_correct, correct, loss``; ``reason`` is ``interval``,
``subset_boundary``, ``epoch_end``, ``schedule`` (the automatic schedule) or ``final``, joined
with ``+`` when several hold at one step. It usually covers a seeded sample of the training set,
so many samples have no trajectory: the detectors then say so and never guess, and
``schedule_coverage`` says what the evaluations it has can show (the diagnosis's coverage block).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ilp_ray.errors import DataError

COLUMNS = ("step", "epoch", "reason", "id", "subset", "p_correct", "correct", "loss", "trained_step")
_NEEDED = ("step", "id", "p_correct")


def load_trajectory(path: str | Path) -> pd.DataFrame:
    """Read and check a trajectory Parquet file (a file, or a folder of Parquet parts).

    Raises:
        DataError: unreadable, a missing column, or p_correct outside [0, 1], naming the file,
            row and column.
    """
    import pyarrow.parquet as pq

    src = str(path)
    if not Path(path).exists():
        raise DataError("trajectory file not found", file=src)
    try:
        df = pq.read_table(src).to_pandas()
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"cannot read trajectory Parquet: {e}", file=src) from e
    return check_trajectory(df, src)


def check_trajectory(df: pd.DataFrame, source: str = "<trajectory>") -> pd.DataFrame:
    """Check and normalise a trajectory table (see ``load_trajectory``); rows are sorted by (id, step)."""
    for col in _NEEDED:
        if col not in df.columns:
            raise DataError(f"missing column (has {list(df.columns)})", file=source, field=col)
    p = pd.to_numeric(df["p_correct"], errors="coerce")
    bad = p.isna() | (p < 0) | (p > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError("must be a number in [0, 1]", file=source, line=row + 1, field="p_correct")
    step = pd.to_numeric(df["step"], errors="coerce")
    if step.isna().any():
        row = int(np.flatnonzero(step.isna().to_numpy())[0])
        raise DataError("must be an integer training step", file=source, line=row + 1, field="step")
    out = df.assign(id=df["id"].astype(str), p_correct=p.astype(float), step=step.astype(np.int64))
    if "trained_step" in df.columns:  # optional; null = the sample was never trained
        ts = pd.to_numeric(df["trained_step"], errors="coerce")
        bad = ts.isna() & df["trained_step"].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError("must be an integer training step or null", file=source, line=row + 1,
                            field="trained_step")
        out["trained_step"] = ts.astype("Int64")
    if "correct" not in out:
        out["correct"] = out["p_correct"] >= 0.5
    if "loss" not in out:
        out["loss"] = np.nan
    if "subset" not in out:
        out["subset"] = "default"
    # A resumed run may evaluate the same step twice; the later row wins.
    return out.drop_duplicates(["step", "id"], keep="last").sort_values(["id", "step"], kind="stable")


def _slope(y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against 0, 1, …; NaN for fewer than two finite points."""
    y = y[np.isfinite(y)]
    if len(y) < 2:
        return float("nan")
    x = np.arange(len(y), dtype=float)
    x -= x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def per_sample(traj: pd.DataFrame, tau: float, last_m: int, max_points: int = 24) -> dict[str, dict]:
    """Per-sample trajectory facts, by id.

    Each value: ``n_evals``, ``steps`` and ``p`` (at most ``max_points`` evenly spaced points, the
    last always kept), ``peak_p``, ``peak_step``, ``final_p``, ``final_step``, ``reached``
    (p >= tau at some evaluation), ``first_learned_step``, ``slope_p`` and ``slope_loss`` over the
    last ``last_m`` evaluations, ``final_loss``.

    With a ``trained_step`` column (the first step that trained the sample; the SFT job writes
    it), also the same facts over the evaluations from that step on: ``trained_step``,
    ``reached_after``, ``peak_after_p``, ``peak_after_step``, ``n_after`` and ``held_after`` (the
    longest run of consecutive evaluations with p >= tau, from that step on). What a sample did
    before training reached it (the base model's knowledge, eroded or not by earlier subsets) says
    nothing about how its own training went. Without the column, or for a sample never trained,
    the "after" facts are those of the whole trajectory.
    """
    out: dict[str, dict] = {}
    has_trained = "trained_step" in traj.columns
    for vid, g in traj.groupby("id", sort=False):
        steps = g["step"].to_numpy()
        p = g["p_correct"].to_numpy(dtype=float)
        loss = g["loss"].to_numpy(dtype=float)
        reached = p >= tau
        keep = np.unique(np.linspace(0, len(p) - 1, min(len(p), max_points)).round().astype(int))
        k = int(p.argmax())
        trained = g["trained_step"].iloc[0] if has_trained else None
        trained = None if trained is None or pd.isna(trained) else int(trained)
        after = steps >= trained if trained is not None else np.ones(len(p), bool)
        if not after.any():  # trained after its last evaluation: judge the whole trajectory
            after[:] = True
        ka = int(np.flatnonzero(after)[p[after].argmax()])
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, reached[after].astype(int), 0])))[::2]
        out[str(vid)] = {
            "subset": str(g["subset"].iloc[0]) if "subset" in g else "default",
            "n_evals": len(p), "steps": steps[keep].tolist(), "p": [round(float(x), 4) for x in p[keep]],
            "peak_p": float(p[k]), "peak_step": int(steps[k]), "final_p": float(p[-1]),
            "final_step": int(steps[-1]), "reached": bool(reached.any()),
            "first_learned_step": int(steps[np.argmax(reached)]) if reached.any() else None,
            "trained_step": trained, "n_after": int(after.sum()), "reached_after": bool(reached[after].any()),
            "held_after": int(runs.max()) if len(runs) else 0,
            "peak_after_p": float(p[ka]), "peak_after_step": int(steps[ka]),
            "slope_p": _slope(p[-last_m:]), "slope_loss": _slope(loss[-last_m:]),
            "final_loss": float(loss[-1]) if np.isfinite(loss[-1]) else None,
        }
    return out


def subset_ends(traj: pd.DataFrame) -> dict[str, int] | None:
    """The step each subset's training ended, in training order, when the subsets trained one
    after another.

    From ``trained_step`` (the first step whose batch held a sample): a subset's span runs from its
    samples' smallest to their largest. The order is sequential when the spans, sorted by start, do
    not overlap (one batch may straddle a boundary, so touching spans count). A trajectory usually
    covers a sample of the data, whose last trained sample can come a little before its subset's
    real end, so a subset ends at the first ``subset_boundary`` evaluation at or after its span, and
    the last subset at the last evaluation. None where the order cannot be said or is not
    sequential: no ``trained_step`` column, fewer than two subsets with a trained sample, or spans
    that overlap (a shuffled run).
    """
    if "trained_step" not in traj.columns:
        return None
    first = traj.dropna(subset=["trained_step"]).drop_duplicates("id")
    spans = first.groupby("subset")["trained_step"].agg(["min", "max"]).sort_values("min")
    if len(spans) < 2 or (spans["min"].to_numpy()[1:] < spans["max"].to_numpy()[:-1]).any():
        return None
    reason = traj["reason"].astype(str) if "reason" in traj.columns else pd.Series("", index=traj.index)
    bounds = np.sort(traj.loc[reason.str.contains("subset_boundary"), "step"].unique())
    ends = {str(name): int(bounds[bounds >= last][0]) if (bounds >= last).any() else int(last)
            for name, last in spans["max"].items()}
    ends[str(spans.index[-1])] = int(traj["step"].max())
    return ends


def read_schedule(path: str | Path) -> dict | None:
    """The resolved schedule the SFT job stored in the trajectory's Parquet metadata, or None.

    A folder of parts is read from its first part; a file without the key (other trainers, older
    runs) or one that cannot be read gives None.
    """
    import json

    import pyarrow.parquet as pq

    from ilp_ray.train.trajectory import SCHEDULE_KEY

    p = Path(path)
    if p.is_dir():
        parts = sorted(p.rglob("*.parquet"))
        if not parts:
            return None
        p = parts[0]
    try:
        meta = pq.read_schema(str(p)).metadata or {}
        return json.loads(meta[SCHEDULE_KEY]) if SCHEDULE_KEY in meta else None
    except Exception:  # metadata is a convenience: a trajectory without it is read as before
        return None


def evals_after_training(traj: pd.DataFrame) -> pd.DataFrame:
    """Per sample (index: id): ``subset``, ``trained_step``, ``n_evals`` and ``n_after``, the
    evaluations at or after its first training step (``per_sample``'s ``n_after``: all of them
    without a ``trained_step``, or when it trained after its last evaluation)."""
    steps = traj["step"].to_numpy()
    if "trained_step" in traj.columns:
        ts = pd.to_numeric(traj["trained_step"], errors="coerce").to_numpy(dtype=float)
    else:
        ts = np.full(len(traj), np.nan)
    after = np.isnan(ts) | (steps >= np.nan_to_num(ts, nan=-np.inf))
    d = pd.DataFrame({"id": traj["id"].astype(str).to_numpy(), "subset": traj["subset"].astype(str).to_numpy(),
                      "trained_step": ts, "after": after})
    g = d.groupby("id", sort=False)
    out = g.agg(subset=("subset", "first"), trained_step=("trained_step", "first"),
                n_evals=("after", "size"), n_after=("after", "sum"))
    out.loc[out["n_after"] == 0, "n_after"] = out["n_evals"]
    out["n_after"] = out["n_after"].astype(np.int64)
    return out


def schedule_coverage(traj: pd.DataFrame, held_evals: int, scope: str = "subset",
                      ids: list[str] | None = None) -> dict:
    """What the trajectory's evaluations can show for cause IV, per subset.

    IV needs a sample held at ``held_evals`` consecutive evaluations at or after its training step
    and lost at a later one: ``held_evals + 1`` evaluations from that step on. Per subset (training
    order when sequential, by name otherwise): ``samples`` (with a trajectory, among ``ids`` when
    given), ``evaluations`` (distinct evaluation steps from the subset's first training step to its
    end, ``subset_ends``; to the run's end when the order is not sequential), ``evals_after_min`` /
    ``evals_after_max`` (over its samples, evaluations at or after their training step),
    ``iv_samples`` (samples with enough of them), ``iv_possible`` and, when not, ``why``. Under
    ``scope: subset`` in a sequential run the last subset is never IV (the recent data).

    Returns:
        ``evaluations`` (distinct steps in all), ``needed`` (held_evals + 1), ``sequential``,
        ``last_subset`` and ``per_subset``.
    """
    ea = evals_after_training(traj)
    if ids is not None:
        ea = ea[ea.index.isin(ids)]
    all_steps = np.sort(traj["step"].unique())
    ends = subset_ends(traj)
    last = list(ends)[-1] if ends else None
    needed = held_evals + 1
    order = list(ends) if ends else sorted(traj["subset"].astype(str).unique())
    order += sorted(set(ea["subset"]) - set(order))
    per: dict[str, dict] = {}
    for name in order:
        g = ea[ea["subset"] == name]
        ts = g["trained_step"].dropna()
        start = float(ts.min()) if len(ts) else -np.inf
        stop = ends[name] if ends and name in ends else np.inf
        n_ev = int(((all_steps >= start) & (all_steps <= stop)).sum())
        ok = int((g["n_after"] >= needed).sum())
        row = {"samples": len(g), "evaluations": n_ev,
               "evals_after_min": int(g["n_after"].min()) if len(g) else None,
               "evals_after_max": int(g["n_after"].max()) if len(g) else None,
               "iv_samples": ok}
        if scope == "subset" and name == last:
            row.update(iv_possible=False, iv_samples=0,
                       why="the last subset, the recent data: never IV under forgetting.scope: subset")
        elif not len(g):
            row.update(iv_possible=False, why="no sample of it has a trajectory")
        elif not ok:
            row.update(iv_possible=False,
                       why=f"its samples have at most {row['evals_after_max']} evaluation(s) at or after their "
                           f"training step; IV needs held_evals + 1 = {needed}")
        else:
            row["iv_possible"] = True
        per[name] = row
    return {"evaluations": len(all_steps), "needed": needed, "sequential": ends is not None,
            "last_subset": last if scope == "subset" else None, "per_subset": per}


def subset_curves(traj: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and mean p(correct) by (step, subset): the per-subset learning curves."""
    return (traj.groupby(["step", "subset"], sort=True)
            .agg(accuracy=("correct", "mean"), p_correct=("p_correct", "mean"), n=("id", "size"))
            .reset_index())


def position_deciles(position: np.ndarray, bins: int = 10) -> np.ndarray:
    """The training-position bin (0 = first 1/bins of training) of each sample, by rank."""
    position = np.asarray(position)
    if len(position) == 0:
        return np.zeros(0, dtype=np.int64)
    rank = pd.Series(position).rank(method="first").to_numpy() - 1
    return np.minimum((rank * bins // len(position)).astype(np.int64), bins - 1)
