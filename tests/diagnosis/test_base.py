"""The detector contract: names checked at class creation, lazy registry, fixed output shape."""

import numpy as np
import pandas as pd
import pytest

from ilp_ray.diagnosis.base import DETECTORS, CauseDetector, CauseResult, check_evidence_table
from ilp_ray.errors import DataError

from .conftest import verdict_row


def test_name_must_be_non_empty_snake_case_and_unique():
    with pytest.raises(TypeError, match="non-empty"):
        class NoName(CauseDetector):
            def detect(self, ctx):
                ...
    with pytest.raises(TypeError, match="snake_case"):
        class Camel(CauseDetector):
            name = "BadName"

            def detect(self, ctx):
                ...
    with pytest.raises(TypeError, match="already used"):
        class Dup(CauseDetector):
            name = "base_conflict"

            def detect(self, ctx):
                ...


def test_registry_resolves_all_five_lazily_and_suggests():
    assert DETECTORS.names() == sorted(["sft_internal_conflict", "left_side_forgetting", "base_conflict",
                                        "base_knowledge_gap", "insufficient_training"])
    for name in DETECTORS.names():
        cls = DETECTORS.get(name)
        assert issubclass(cls, CauseDetector) and cls.name == name and cls.roman
    with pytest.raises(KeyError, match="Did you mean 'base_conflict'"):
        DETECTORS.get("base_conflct")


def test_run_checks_the_output_shape(ctx_factory):
    class Broken(CauseDetector):
        name = "broken_for_test"

        def detect(self, ctx):
            f = self.frame([True], [1.5], [{}])  # clipped into [0, 1] by frame()
            return CauseResult(f.iloc[:0], {})  # but the wrong length

    ctx = ctx_factory([verdict_row("a")])
    with pytest.raises(RuntimeError, match="expected"):
        Broken().run(ctx)


def test_evidence_table_is_checked():
    ok = check_evidence_table(pd.DataFrame({"id": [1], "corpus_verdict": ["absent"], "corpus_score": [0.5]}), "e.pq")
    assert ok["id"].tolist() == ["1"]
    with pytest.raises(DataError, match=r"e\.pq: field 'corpus_score'"):
        check_evidence_table(pd.DataFrame({"id": ["a"], "corpus_verdict": ["absent"]}), "e.pq")
    with pytest.raises(DataError, match=r"e\.pq:2: field 'corpus_verdict'"):
        check_evidence_table(pd.DataFrame({"id": ["a", "b"], "corpus_verdict": ["absent", "maybe"],
                                           "corpus_score": [0.5, 0.5]}), "e.pq")


def test_every_detector_has_the_fixed_shape_and_json_evidence(ctx_factory):
    import json

    rows = [verdict_row(f"s{i}", f"question number {i}", base_probs=[0.25] * 4, position=i) for i in range(6)]
    ctx = ctx_factory(rows)
    for name in DETECTORS.names():
        res = DETECTORS.create(name).run(ctx)
        assert list(res.frame.columns[:3]) == [f"is_{name}", f"{name}_score", f"{name}_evidence"]
        assert res.frame[f"is_{name}"].dtype == bool
        assert np.all((res.frame[f"{name}_score"] >= 0) & (res.frame[f"{name}_score"] <= 1))
        for ev in res.frame[f"{name}_evidence"]:
            json.dumps(ev)


def test_trajectory_trained_step_is_optional_and_checked():
    from ilp_ray.diagnosis.trajectories import check_trajectory

    rows = pd.DataFrame({"step": [10, 20], "id": ["a", "b"], "p_correct": [0.5, 0.6]})
    assert "trained_step" not in check_trajectory(rows, "t.pq")
    ok = check_trajectory(rows.assign(trained_step=[5, None]), "t.pq")
    assert ok["trained_step"].tolist()[0] == 5 and pd.isna(ok["trained_step"].tolist()[1])
    with pytest.raises(DataError, match=r"t\.pq:2: field 'trained_step'"):
        check_trajectory(rows.assign(trained_step=[5, "soon"]), "t.pq")


def test_trained_step_is_the_first_batch_that_held_the_sample():
    from ilp_ray.train.run import with_trained_step

    traj = pd.DataFrame({"step": [2, 2, 2, 4, 4, 4], "id": ["a", "b", "c"] * 2, "p_correct": [0.5] * 6})
    # Step 3 was logged twice (a resumed run) and out of order; "c" was never trained.
    batches = pd.DataFrame({"step": [3, 1, 2, 3], "epoch": [0] * 4,
                            "ids": [["b", "a"], ["a"], ["a"], ["b"]]})
    out = with_trained_step(traj, batches)
    got = out.groupby("id")["trained_step"].first()
    assert got["a"] == 1 and got["b"] == 3 and pd.isna(got["c"])
    assert with_trained_step(traj, pd.DataFrame())["trained_step"].isna().all()
