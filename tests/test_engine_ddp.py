"""DDP with 2 CPU processes (gloo): the same parameter update as 1 process on the combined batch, and the
same evaluation features (sharded, gathered, back in dataset order) as 1 process."""
from __future__ import annotations

import os
import socket

import pytest
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


class RandomClips(torch.utils.data.Dataset):
    """5 synthetic (image, audio, label) items: an odd count, so the ranks' shards need padding."""

    def __init__(self):
        g = torch.Generator().manual_seed(9)
        self.image, self.audio = torch.randn(5, 3, 64, 64, generator=g), torch.randn(5, 1, 128, 192, generator=g)

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"image": self.image[i], "audio": self.audio[i], "label": torch.tensor(i)}


def _encoder():
    from avfusion.models.registry import build_encoder

    torch.manual_seed(3)
    return build_encoder({"preset": "deepavfusion-smoke"})


def _worker(rank, world, port, out_dir):
    from avfusion.tasks.knn_probe import extract_features

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(_model(), _loss, FixedRegression(), _cfg(4), out_dir, seed=0, device="cpu")
        feats, labels = extract_features(_encoder(), RandomClips(), 2, "cpu")
        torch.save({"feats": feats, "labels": labels}, f"{out_dir}/features_rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process gloo run (train step + feature extraction), shared by the tests below."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def test_two_gloo_processes_update_like_one_process_on_the_combined_batch(ddp_run, tmp_path):
    torch.set_num_threads(1)
    single = train(_model(), _loss, FixedRegression(), _cfg(8), tmp_path / "single", seed=0, device="cpu")
    ddp_state = load_checkpoint(ddp_run)["state_dict"]
    start = _model().state_dict()
    for name, value in single.model.state_dict().items():
        assert not torch.allclose(value, start[name])  # the step did change the weights
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-5, atol=1e-6)
    ckpt = load_checkpoint(ddp_run)
    assert ckpt["sampler"]["world_size"] == 2 and len(ckpt["rng"]) == 2


def test_knn_features_gathered_over_two_ranks_equal_one_process_in_dataset_order(ddp_run):
    from avfusion.tasks.knn_probe import extract_features

    torch.set_num_threads(1)
    out = ddp_run
    single, labels = extract_features(_encoder(), RandomClips(), 2, "cpu")
    for rank in range(2):
        got = torch.load(out / f"features_rank{rank}.pt")
        assert got["labels"].tolist() == labels.tolist() == [0, 1, 2, 3, 4]
        for m in ("image", "audio", "fusion"):
            torch.testing.assert_close(got["feats"][m], single[m], rtol=1e-5, atol=1e-6)
