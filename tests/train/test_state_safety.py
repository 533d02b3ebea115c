"""A checkpoint's train state is read without running code (issue 20, finding 6).

Run directories sit on volumes every pod may write; a pickle planted there would run on resume.
The train state is JSON; a legacy ``train_state.pt`` and DeepSpeed's own files go through torch's
restricted unpickler only.
"""

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from ilp_ray.train import state as S


class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['ILP_TEST_PWNED']}",))


def test_train_state_round_trips_as_json_and_restores_every_rng(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    torch.rand(2), np.random.rand(), np.random.randn(), random.random()  # states mid-stream (a cached gaussian)
    state = {"step": 12, "epoch": 1, "position": np.int64(4), "order": [np.int64(2), 0, 1],
             "sampler": {"released": [1], "curve": [0.5, float("nan")]}, "history": [(5, {"A": 0.25})],
             "rng": S.rng_state()}
    (tmp_path / S.STATE).write_text(json.dumps(state, default=S._plain))
    want = (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), random.random())
    back = S.load_train_state(tmp_path)
    assert back["position"] == 4 and back["order"] == [2, 0, 1] and back["history"] == [[5, {"A": 0.25}]]
    S.set_rng_state(back["rng"])
    got = (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), random.random())
    assert got == want
    assert json.loads((tmp_path / S.STATE).read_text())["step"] == 12  # plain JSON on disk


def test_a_planted_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ILP_TEST_PWNED", str(marker))
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    with open(ckpt / S.LEGACY_STATE, "wb") as f:
        pickle.dump({"step": 1, "rng": _Planted()}, f)
    with pytest.raises(ValueError, match=r"train_state\.pt: refused to load"):
        S.load_train_state(ckpt)
    assert not marker.exists()


def test_a_legacy_train_state_still_resumes(tmp_path):
    """An earlier version's torch.save of the same dict (numpy's RNG array inside) loads safely."""
    torch.save({"step": 7, "epoch": 0, "position": 2, "order": [1, 0],
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
               tmp_path / S.LEGACY_STATE)
    back = S.load_train_state(tmp_path)
    assert back["step"] == 7
    want = np.random.rand()
    S.set_rng_state(back["rng"])
    assert np.random.rand() == want


def test_deepspeed_files_load_only_through_the_restricted_unpickler(tmp_path, monkeypatch):
    """The loader DeepSpeed is given refuses a planted pickle in an optimizer-state file."""
    from ilp_ray.train.strategy import _safe_deepspeed_loads

    class Engine:
        class checkpoint_engine:
            pass

    marker = tmp_path / "pwned"
    monkeypatch.setenv("ILP_TEST_PWNED", str(marker))
    _safe_deepspeed_loads(Engine)
    torch.save({"x": torch.ones(2), "loss_scaler": None}, tmp_path / "ok.pt")
    assert Engine.checkpoint_engine.load(str(tmp_path / "ok.pt"))["x"].sum() == 2
    with open(tmp_path / "bad.pt", "wb") as f:
        pickle.dump({"x": _Planted()}, f)
    with pytest.raises(pickle.UnpicklingError):
        Engine.checkpoint_engine.load(str(tmp_path / "bad.pt"))
    assert not marker.exists()


def test_latest_registered_step_reads_ray_trains_snapshot(tmp_path):
    """What a restart resumes from: -1 before any checkpoint (no file, a half-written file, or no
    result yet), else the step of the latest registered checkpoint."""
    from ilp_ray.train.state import latest_registered_step

    snap = tmp_path / "checkpoint_manager_snapshot.json"
    assert latest_registered_step(tmp_path) == -1
    snap.write_text('{"latest_checkpoint_result": ')
    assert latest_registered_step(tmp_path) == -1
    snap.write_text(json.dumps({"latest_checkpoint_result": None}))
    assert latest_registered_step(tmp_path) == -1
    snap.write_text(json.dumps({"latest_checkpoint_result": {"metrics": {"step": 20, "loss": 1.0}}}))
    assert latest_registered_step(str(tmp_path)) == 20
