"""The loop's collectives run on the model's device: Ray Train's process group on GPU is NCCL,
which refuses CPU tensors. One-rank groups in this process, gloo on CPU and NCCL on CUDA."""

import socket
import time

import pytest

torch = pytest.importorskip("torch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=[("gloo", "cpu"),
                        pytest.param(("nccl", "cuda"), marks=[
                            pytest.mark.gpu,
                            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def group_device(request):
    import torch.distributed as dist

    backend, device = request.param
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield torch.device(device)
    finally:
        dist.destroy_process_group()


def test_window_loss_is_reduced_on_the_model_device(group_device):
    from ilp_ray.train.loop import _window_metrics

    win = {"t": time.perf_counter() - 1.0, "tokens": 100, "loss": 3.0, "n": 2}
    # world=2 takes the all-reduce path; the one-rank group's sum is this rank's window mean (1.5).
    m = _window_metrics(win, 2, 1e-3, 0, group_device)
    assert m["loss"] == pytest.approx(0.75)
    assert m["lr"] == 1e-3 and m["tokens_per_s"] > 0
    assert win["n"] == 0 and win["loss"] == 0.0 and win["tokens"] == 0
