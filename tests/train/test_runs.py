"""Real training runs on Ray Train: memorisation (DeepSpeed ZeRO-1), left-side forgetting (DDP), CPT."""

import pytest

from tests.conftest import FACTS
from tests.train.conftest import interference_rows, train_config, write_jsonl

pytestmark = pytest.mark.slow


def test_tiny_model_memorises_and_the_audit_sees_it(tmp_path, ray_session):
    """DeepSpeed ZeRO-1 on CPU: loss falls by more than half, and the audit core finds the facts learned."""
    import mlflow
    import numpy as np

    from ilp_ray.data import HashingEmbedder, build_mc_items, read_sft
    from ilp_ray.metrics import accuracy, option_probs, pad_ragged
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.train import checkpoint_id
    from ilp_ray.train.config import SftTrainConfig
    from ilp_ray.train.run import run_training

    data = write_jsonl(tmp_path / "facts.jsonl", [
        {"id": f"f{i:02d}", "prompt": q, "response": a, "subset": s} for i, (s, q, a) in enumerate(FACTS)])
    cfg = SftTrainConfig.model_validate(train_config(
        data, tmp_path / "runs", "memorise", **{"optim.epochs": 40, "engine.strategy": "deepspeed",
                                                "checkpoint.every_steps": 60, "trajectory.every_steps": 30,
                                                "tracking.enabled": True}))
    result = run_training(cfg)
    assert result.metrics["step"] == 120

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}")
    run = client.get_run(result.run_id)
    loss = [m.value for m in sorted(client.get_metric_history(result.run_id, "loss"), key=lambda m: m.step)]
    assert len(loss) == 120 and loss[-1] < 0.5 * loss[0]
    for key in ("lr", "tokens_per_s", "traj.acc.geo", "traj.acc.sci", "traj.seconds"):
        assert client.get_metric_history(result.run_id, key), key
    assert run.data.params["optim.epochs"] == "40" and run.data.params["final_checkpoint"] == str(result.checkpoint)
    assert run.data.tags["ilp.checkpoint_id"] == checkpoint_id(result.checkpoint) == result.checkpoint_id
    assert [a.path for a in client.list_artifacts(result.run_id, "trajectory")] == ["trajectory/trajectory.parquet"]

    # The audit core loads the saved checkpoint as it is and scores it in the trained (chat) format.
    items = build_mc_items(read_sft(data), k=4, seed=1, embedder=HashingEmbedder())
    scores = TransformersEngine(str(result.checkpoint), fmt="chat").score(items)
    probs = option_probs(pad_ragged([s.logprob_sum for s in scores], -np.inf))
    assert accuracy(probs, np.array([it.answer for it in items])) >= 0.75


def test_sequential_order_forgets_the_first_subset(tmp_path, ray_session):
    """The paper's left-side forgetting, with plain DDP. Subsets A then B (the same entities,
    near-identical prompts, other colours), 4 epochs: A is learned by the A/B boundary of the last
    epoch and lost by its end, and ends far below where a global shuffle leaves it.

    Figures are mean p(correct) of the trajectory (continuous, so steadier than accuracy). Seen
    with model seeds 0 and 1: sequential A 0.88-0.92 at the boundary and 0.06-0.11 at the end;
    shuffled A 0.34-0.47 at the end (it is still learning to tell the seasons apart). They are
    plain summed-likelihood p(correct) (trajectory.calibration none): the default subtracts each
    colour's question-free prior, which moves B's end point to 0.5997 against the 0.6 floor here.
    """
    import pandas as pd

    from ilp_ray.train.config import SftTrainConfig
    from ilp_ray.train.run import run_training

    data = write_jsonl(tmp_path / "interference.jsonl", interference_rows(repeats=8))
    final, traj = {}, {}
    for sampler in ("sequential", "shuffled"):
        cfg = SftTrainConfig.model_validate(train_config(
            data, tmp_path / "runs", sampler,
            **{"order.sampler": sampler, "order.subset_order": ["A", "B"] if sampler == "sequential" else None,
               "optim.epochs": 4, "engine.strategy": "ddp", "trajectory.max_items": 64,
               "trajectory.calibration": "none"}))
        result = run_training(cfg)
        assert result.metrics["step"] == 128
        traj[sampler] = t = pd.read_parquet(result.trajectory)
        final[sampler] = t[t.step == t.step.max()].groupby("subset").p_correct.mean().to_dict()
    seq = traj["sequential"]
    # Each row knows the first step that trained its sample: all of A before any of B in epoch 0.
    first = seq.groupby("id").agg(subset=("subset", "first"), trained=("trained_step", "first"))
    assert first.trained.notna().all()
    assert first[first.subset == "A"].trained.max() < first[first.subset == "B"].trained.min()
    boundary = seq[seq.reason.str.contains("subset_boundary")].step.max()  # the last epoch's A/B switch
    assert boundary == 112
    at_boundary = seq[seq.step == boundary].groupby("subset").p_correct.mean().to_dict()
    assert at_boundary["A"] >= 0.6 and final["sequential"]["A"] <= 0.3  # learned, then forgotten
    assert final["sequential"]["B"] >= 0.6
    assert final["shuffled"]["A"] >= final["sequential"]["A"] + 0.15


def test_cpt_mixture_trains(tmp_path, ray_session):
    """CPT on a .txt knowledge corpus and a JSONL general corpus: blocks train, the checkpoint loads."""
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.train.config import CptTrainConfig
    from ilp_ray.train.run import run_training

    (tmp_path / "k.txt").write_text("\n\n".join(f"The {c} lantern number {i} glows softly.\nIt is old."
                                                for i, c in enumerate(["red", "blue", "green"] * 4)))
    write_jsonl(tmp_path / "g.jsonl", [{"text": f"General document {i} about rivers and hills."}
                                       for i in range(40)])
    cfg = CptTrainConfig.model_validate({
        "run_dir": str(tmp_path / "runs"), "name": "cpt",
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "vocab_size": 300}},
        "mixture": {"knowledge": str(tmp_path / "k.txt"), "general": str(tmp_path / "g.jsonl"), "ratio": 0.2},
        "block_size": 32, "optim": {"batch_size": 4, "epochs": 2, "lr": 3e-3},
        "engine": {"strategy": "deepspeed"}, "tracking": {"enabled": False}})
    result = run_training(cfg)
    assert result.metrics["step"] > 0 and result.trajectory is None
    TransformersEngine(str(result.checkpoint), fmt="plain")  # a loadable HF checkpoint

    # Rerunning the finished job returns its result without training again; its checkpoint stays.
    again = run_training(cfg)
    assert again.checkpoint == result.checkpoint and again.checkpoint.is_dir()
    assert again.checkpoint_id == result.checkpoint_id and again.metrics["step"] == result.metrics["step"]
    # A changed data file is another job: the marker no longer matches.
    from ilp_ray.train.run import finished

    assert finished(result.run_path, cfg) is not None
    (tmp_path / "k.txt").write_text((tmp_path / "k.txt").read_text() + "\n\nThe violet lantern glows.")
    assert finished(result.run_path, cfg) is None
    # Continuing a finished run on changed data would train one model on two datasets: refused.
    from ilp_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=r"another version of .*k\.txt"):
        run_training(cfg)
