"""DDP with 2 CPU processes (gloo) makes the same parameter update as 1 process on the combined batch."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from avfusion.engine import OptimConfig, load_checkpoint, train


class FixedRegression(torch.utils.data.Dataset):
    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.randn(n, 2, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _model():
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def _loss(model, batch):
    return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}


def _cfg(batch_size):  # sgd: the update is linear in the gradient, so averaging is checked exactly
    return OptimConfig(optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.01, epochs=1,
                       batch_size=batch_size, max_steps_per_epoch=1, schedule="constant")


def _worker(rank, world, port, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(_model(), _loss, FixedRegression(), _cfg(4), out_dir, seed=0, device="cpu")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_update_like_one_process_on_the_combined_batch(tmp_path):
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    single = train(_model(), _loss, FixedRegression(), _cfg(8), tmp_path / "single", seed=0, device="cpu")
    ddp_state = load_checkpoint(tmp_path / "ddp")["state_dict"]
    start = _model().state_dict()
    for name, value in single.model.state_dict().items():
        assert not torch.allclose(value, start[name])  # the step did change the weights
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-5, atol=1e-6)
    ckpt = load_checkpoint(tmp_path / "ddp")
    assert ckpt["sampler"]["world_size"] == 2 and len(ckpt["rng"]) == 2
