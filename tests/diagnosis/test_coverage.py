"""Never silent: what a run could and could not show, in summary.json, the CLI and the report.

Hand-built verdicts and trajectories (tests/diagnosis/conftest.py); the end-to-end tests write
them as an audit run directory and run ``ilp diagnose`` on it (hashing embedder, no MLflow).
"""

import json

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from ilp_ray.cli import app
from ilp_ray.diagnosis.run import coverage, coverage_metrics, diagnose
from tests.diagnosis.conftest import traj_rows, verdict_row, verdicts

runner = CliRunner()
LEARNED = [0.9, 0.04, 0.03, 0.03]  # p(correct) 0.9: not unlearned


def _flat(text: str) -> str:
    """Rich wraps long lines to the terminal's width: compare with whitespace collapsed."""
    return " ".join(text.split())


def cov_of(ctx):
    table, _, _ = diagnose(ctx)
    return coverage(ctx, table)


def write_run(tmp_path, rows):
    from ilp_ray import storage as S

    run = tmp_path / "audit"
    S.write_table_atomic(pa.Table.from_pandas(verdicts(rows), preserve_index=False),
                         S.shard_path(run / "verdicts", 0))
    return run


def diagnose_cli(run, *extra, color=False):
    r = runner.invoke(app, ["diagnose", "--run", str(run), "--set", "embedder=hashing",
                            "--set", "tracking.enabled=false", *extra],
                      env={"FORCE_COLOR": "1", "TERM": "xterm"} if color else {"NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    out = run / "diagnosis"
    return r.output, json.loads((out / "summary.json").read_text())["coverage"], (out / "report.html").read_text()


def two_subsets_two_evaluations():
    """One epoch, s1 then s2, evaluated only at the s1/s2 boundary (step 5) and the end (step 10):
    the old default schedule of a one-epoch, two-subset sequential run."""
    rows = ([verdict_row(f"a{i}", question=f"what is fact {i} of the first kind", subset="s1", position=i)
             for i in range(3)]
            + [verdict_row(f"b{i}", question=f"tell me fact {i} of the second sort", subset="s2", position=3 + i)
               for i in range(3)])
    traj = []
    for i in range(3):
        traj += traj_rows(f"a{i}", [0.8, 0.1], subset="s1", steps=[5, 10], trained_step=i + 1)
        traj += traj_rows(f"b{i}", [0.1, 0.2], subset="s2", steps=[5, 10], trained_step=6 + i)
    for r in traj:
        r["reason"] = "subset_boundary" if r["step"] == 5 else "epoch_end"
    return rows, traj


# ------------------------------------------------------------------------------- no base model

def test_without_a_base_model_i_and_ii_are_untestable_with_the_reason(ctx_factory):
    rows = [verdict_row(f"s{i}", question=f"question number {i}", position=i) for i in range(4)]
    cov = cov_of(ctx_factory(rows))
    for c in ("base_knowledge_gap", "base_conflict"):
        assert cov[c] == {"testable": False, "why": "no base model was scored", "samples": 0, "of": 4}
    assert cov["sft_internal_conflict"]["testable"] and cov["sft_internal_conflict"]["why"] is None
    assert "No base model was scored: I (knowledge gap) and II (base conflict) cannot fire on this run." \
        in cov["warnings"]
    # No base, no trajectory and 4 samples (< min_population 20 for V's percentiles): only III could test them.
    assert not cov["insufficient_training"]["testable"] and not cov["left_side_forgetting"]["testable"]
    assert cov["untested"]["n"] == 4 and cov["untested"]["ids"] == ["s0", "s1", "s2", "s3"]
    assert any(w.startswith("4 of 4 diagnosed sample(s) could not be tested for any cause but III")
               for w in cov["warnings"])

    # With a base model, I and II can be tested on every diagnosed sample, and nothing is left untested.
    based = [verdict_row(f"s{i}", question=f"question number {i}", position=i, base_probs=[0.25] * 4)
             for i in range(4)]
    cov = cov_of(ctx_factory(based))
    assert cov["base_knowledge_gap"] == {"testable": True, "why": None, "samples": 4, "of": 4}
    assert cov["untested"]["n"] == 0 and not any("base model" in w for w in cov["warnings"])


def test_without_a_base_model_the_cli_and_the_report_say_so(tmp_path):
    rows = [verdict_row(f"s{i}", question=f"question number {i}", position=i) for i in range(4)]
    run = write_run(tmp_path, rows)
    out, cov, html = diagnose_cli(run)
    assert cov["base_conflict"]["why"] == "no base model was scored"
    text = _flat(out)
    assert "warning: No base model was scored: I (knowledge gap) and II (base conflict) cannot fire" in text
    assert "warning: No training trajectory was given: IV (left-side forgetting) cannot fire" in text
    head = html[:html.index("Cause distribution")]  # near the top, before the causes
    assert "What this run could and could not show" in head
    assert "No base model was scored: I (knowledge gap) and II (base conflict) cannot fire" in head
    assert "no base model was scored" in head  # the table's "why not"

    # The warnings print in yellow.
    out, _, _ = diagnose_cli(run, color=True)
    assert "\x1b[33m" in out and "No base model was scored" in _flat(out)


# ------------------------------------------------------------- a schedule that cannot show IV

def test_two_evaluations_over_two_subsets_cannot_show_iv(ctx_factory):
    rows, traj = two_subsets_two_evaluations()
    # The case: held_evals 2 (preset lab) needs 3 evaluations; the default (1) needs 2.
    assert cov_of(ctx_factory(rows, traj))["left_side_forgetting"]["testable"] is True
    cov = cov_of(ctx_factory(rows, traj, **{"forgetting.held_evals": 2}))
    iv = cov["left_side_forgetting"]
    assert iv["testable"] is False and iv["samples"] == 0 and iv["last_subset"] == 3
    assert "held_evals + 1 = 3 evaluations" in iv["why"]
    t = cov["trajectory"]
    assert t["evaluations"] == 2 and t["needed_for_iv"] == 3 and t["sequential"] and t["last_subset"] == "s2"
    s1, s2 = t["per_subset"]["s1"], t["per_subset"]["s2"]
    assert (s1["evaluations"], s1["evals_after_min"], s1["evals_after_max"], s1["iv_possible"]) == (1, 2, 2, False)
    assert (s2["evaluations"], s2["evals_after_max"], s2["iv_possible"]) == (1, 1, False)
    assert "last subset" in s2["why"]
    assert any(w.startswith("IV cannot fire in subset s1: its samples have at most 2 evaluation(s)")
               for w in cov["warnings"])
    assert not any("subset s2" in w for w in cov["warnings"] if w.startswith("IV cannot fire"))
    # V still reads these trajectories (two points give a slope): it can be tested.
    assert cov["insufficient_training"]["testable"] and cov["insufficient_training"]["trajectory"] == 6

    # One more evaluation inside s1 (held at 3 and 5, lost by 10) and IV can fire there.
    more = traj + [{**r, "step": 3, "reason": "schedule", "p_correct": 0.8} for r in traj if r["step"] == 5]
    cov = cov_of(ctx_factory(rows, more))
    assert cov["trajectory"]["per_subset"]["s1"]["iv_possible"] and cov["left_side_forgetting"]["testable"]
    assert not any(w.startswith("IV cannot fire") for w in cov["warnings"])


def test_two_evaluations_over_two_subsets_in_the_cli_and_the_report(tmp_path):
    rows, traj = two_subsets_two_evaluations()
    run = write_run(tmp_path, rows)
    tpath = tmp_path / "trajectory.parquet"
    pd.DataFrame(traj).to_parquet(tpath)
    out, cov, html = diagnose_cli(run, "--trajectory", str(tpath), "--set", "forgetting.held_evals=2")
    assert cov["left_side_forgetting"]["testable"] is False
    assert "warning: IV cannot fire in subset s1: its samples have at most 2 evaluation(s)" in _flat(out)
    head = html[:html.index("Cause distribution")]
    assert "IV cannot fire in subset s1" in head and "evaluations after training" in head


# ------------------------------------------------------------------- a cause registered from outside

def test_a_registered_cause_declares_its_own_coverage(ctx_factory):
    """Coverage comes from each detector: one registered from outside that needs a base model is
    untestable without one, named in the base sentence; one with its own ``coverage`` is judged
    by it, its warnings joining the block's; and the built-in rules are the built-in classes'."""
    import numpy as np

    from ilp_ray.diagnosis.base import CauseCoverage, CauseDetector, CauseResult
    from ilp_ray.diagnosis.registry import DETECTORS

    class NeedsBase(CauseDetector):
        name, roman, short, order, needs_base = "needs_a_base", "VI", "base reader", 50, True

        def detect(self, ctx):
            return CauseResult(self.silent(len(ctx.verdicts), {}), {})

    class FirstTwo(CauseDetector):
        name, short, order = "first_two", "first two", 60

        def coverage(self, ctx, facts):
            rows = np.arange(facts.n) < 2
            return CauseCoverage(rows, "only the first two rows", warnings=["first_two looks at two rows only."])

        def detect(self, ctx):
            return CauseResult(self.silent(len(ctx.verdicts), {}), {})

    DETECTORS.register("needs_a_base", NeedsBase)
    DETECTORS.register("first_two", FirstTwo)
    try:
        rows = [verdict_row(f"s{i}", question=f"question number {i}", position=i) for i in range(4)]
        cov = cov_of(ctx_factory(rows, causes=["sft_internal_conflict", "needs_a_base", "first_two",
                                               "base_conflict"]))
        assert cov["needs_a_base"] == {"testable": False, "why": "no base model was scored", "samples": 0, "of": 4}
        assert cov["first_two"] == {"testable": True, "why": None, "samples": 2, "of": 4}
        assert "No base model was scored: II (base conflict) and VI (base reader) cannot fire on this run." \
            in cov["warnings"]
        assert "first_two looks at two rows only." in cov["warnings"]
        # s2, s3: no cause but III had the inputs; s0, s1: first_two had them
        assert cov["untested"]["ids"] == ["s2", "s3"]
        assert cov["left_side_forgetting"]["why"] == "not tested: not in diagnose.causes"
    finally:
        DETECTORS._entries.pop("needs_a_base", None)
        DETECTORS._entries.pop("first_two", None)


# ------------------------------------------------------------------- partial trajectory coverage

def test_partial_trajectory_coverage_is_reported_with_the_right_shares(ctx_factory):
    """10 samples, 6 unlearned (u0-u5) and 4 learned (k0-k3); the trajectory covers u0, u1, u2
    and k0, 4 evaluations each. By hand: 4/10 = 0.4 of all samples, 3/6 = 0.5 of the unlearned."""
    rows = ([verdict_row(f"u{i}", question=f"unlearned question {i}", position=i) for i in range(6)]
            + [verdict_row(f"k{i}", question=f"learned question {i}", position=6 + i, probs=LEARNED)
               for i in range(4)])
    traj = [r for i in ("u0", "u1", "u2", "k0") for r in traj_rows(i, [0.2, 0.7, 0.8, 0.1])]
    ctx = ctx_factory(rows, traj)
    cov = cov_of(ctx)
    t = cov["trajectory"]
    assert (t["samples"], t["of"], t["share"]) == (4, 10, 0.4)
    assert (t["unlearned"], t["unlearned_of"], t["unlearned_share"]) == (3, 6, 0.5)
    assert (t["diagnosed"], t["diagnosed_of"]) == (3, 6)
    assert cov["left_side_forgetting"] == {"testable": True, "why": None, "samples": 3, "of": 6, "last_subset": 0}
    # 10 samples < min_population: V judges only the 3 with a trajectory; the other 3 lack its inputs.
    assert cov["insufficient_training"]["trajectory"] == 3 and cov["insufficient_training"]["pattern_only"] == 0
    assert cov["untested"]["n"] == 3 and cov["untested"]["ids"] == ["u3", "u4", "u5"]
    assert ("Only 3 of 6 diagnosed samples (50%) have a trajectory (trajectory.max_items samples the "
            "training set): IV cannot fire for the other 3, and V judges them on rarity and length alone."
            in cov["warnings"])
    m = coverage_metrics(cov)
    assert m["diagnosis.coverage.trajectory_share"] == 0.4
    assert m["diagnosis.coverage.trajectory_share_unlearned"] == 0.5
    assert m["diagnosis.coverage.left_side_forgetting.testable"] == 1.0
    assert m["diagnosis.coverage.base_conflict.testable"] == 0.0
    assert m["diagnosis.coverage.untested"] == 3.0 and m["diagnosis.coverage.evaluations"] == 4.0


def test_full_coverage_with_a_base_model_has_no_warnings(ctx_factory):
    rows = [verdict_row(f"u{i}", question=f"unlearned question {i}", position=i, base_probs=[0.25] * 4)
            for i in range(3)]
    traj = [r for i in range(3) for r in traj_rows(f"u{i}", [0.2, 0.7, 0.8, 0.1])]
    cov = cov_of(ctx_factory(rows, traj))
    assert cov["warnings"] == [] and cov["trajectory"]["share"] == 1.0
    assert all(cov[c]["testable"] for c in ("sft_internal_conflict", "left_side_forgetting", "base_conflict",
                                            "base_knowledge_gap", "insufficient_training"))


def test_a_cause_left_out_of_the_config_is_reported_as_not_tested(ctx_factory):
    rows = [verdict_row("a", base_probs=[0.25] * 4), verdict_row("b", question="other", base_probs=[0.25] * 4)]
    cov = cov_of(ctx_factory(rows, causes=["base_conflict", "base_knowledge_gap"], embedder="hashing"))
    assert cov["left_side_forgetting"] == {"testable": False, "why": "not tested: not in diagnose.causes",
                                           "samples": 0, "of": 2}
    assert not any("trajectory" in w for w in cov["warnings"])


def test_the_schedule_the_sft_job_stored_is_read_back(tmp_path):
    from ilp_ray.diagnosis.trajectories import read_schedule
    from ilp_ray.train.run import write_trajectory

    rows = pd.DataFrame(traj_rows("a", [0.1, 0.2], trained_step=1))
    sched = {"mode": "auto", "every_steps": None, "min_evals_per_subset": 4, "epochs": {"0": {"steps": [10, 20]}}}
    write_trajectory(rows, tmp_path / "t.parquet", sched)
    assert read_schedule(tmp_path / "t.parquet") == sched
    rows.to_parquet(tmp_path / "plain.parquet")
    assert read_schedule(tmp_path / "plain.parquet") is None
    assert read_schedule(tmp_path / "missing.parquet") is None


@pytest.mark.parametrize("n_after,fires", [(2, False), (3, True)])
def test_the_iv_bound_matches_the_detector(ctx_factory, n_after, fires):
    """The coverage's rule (held_evals + 1 evaluations from the training step on) is the detector's:
    with one evaluation fewer no sample can be held twice and then lost."""
    from ilp_ray.diagnosis.base import DETECTORS

    ps = [0.9] * (n_after - 1) + [0.1]
    rows = [verdict_row("a")]
    traj = traj_rows("a", [0.1, *ps], trained_step=20)  # the evaluation at step 10 precedes its training
    ctx = ctx_factory(rows, traj, **{"forgetting.held_evals": 2})
    res = DETECTORS.create("left_side_forgetting").run(ctx)
    assert bool(res.frame["is_left_side_forgetting"].iloc[0]) is fires
    assert cov_of(ctx)["left_side_forgetting"]["testable"] is fires
