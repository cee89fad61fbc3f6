"""A run killed with SIGKILL mid-epoch resumes from its checkpoint and logs the same losses, step for step.

The toy job below uses every source of randomness the real jobs use (shuffled sampler, data-side
torch/numpy/python randomness, dropout), gradient accumulation, warmup + cosine and AdamW.
Run by hand: .venv/bin/python tests/test_engine_resume.py OUT_DIR [SLEEP_S]
"""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from avfusion.engine import OptimConfig, checkpoint_path, load_checkpoint, train


class NoisyRegression(torch.utils.data.Dataset):
    """y = x W* + noise, with per-item augmentation drawn from the global RNGs."""

    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.randn(8, 3, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        jitter = 0.01 * torch.randn(8) + 0.001 * float(np.random.rand()) + 0.001 * random.random()
        return {"x": self.x[i] + jitter, "y": self.y[i]}


def toy_model() -> torch.nn.Module:
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Dropout(0.2),
                               torch.nn.LayerNorm(32), torch.nn.Linear(32, 3))


def run_toy_job(out_dir: Path, sleep_s: float = 0.0):
    torch.set_num_threads(1)
    cfg = OptimConfig(optimizer="adamw", lr=3e-3, epochs=3, warmup_epochs=1, batch_size=4, accum_iter=2)

    def loss_fn(model, batch):
        if sleep_s:
            time.sleep(sleep_s)
        pred = model(batch["x"])
        loss = torch.nn.functional.mse_loss(pred, batch["y"])
        return loss, {"abs_err": (pred - batch["y"]).abs().mean()}

    return train(toy_model(), loss_fn, NoisyRegression(), cfg, out_dir, seed=3, device="cpu", progress_every=6)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _launch(out_dir: Path, sleep_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(out_dir), str(sleep_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_epoch_then_restart_logs_identical_losses(tmp_path):
    ref_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _launch(ref_dir, 0.0)
    victim = _launch(killed_dir, 0.15)
    # 48 items / batch 4 = 12 iterations = 6 optimizer steps per epoch: kill in epoch 1 (0-based)
    deadline = time.time() + 60
    while time.time() < deadline:
        log = killed_dir / "log.csv"
        if checkpoint_path(killed_dir).is_file() and log.is_file() and \
                any(int(r["step"]) >= 9 for r in _rows(log)):
            break
        assert victim.poll() is None, victim.stdout.read().decode()
        time.sleep(0.05)
    else:
        raise AssertionError("the victim run never reached the middle of epoch 1")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(killed_dir)
    assert ckpt["epoch"] in (1, 2)                  # killed mid-run, after at least one checkpoint
    assert any(int(r["step"]) > ckpt["step"] for r in _rows(killed_dir / "log.csv"))  # rows past it

    restarted = _launch(killed_dir, 0.0)
    out, _ = restarted.communicate(timeout=90)
    assert restarted.returncode == 0, out.decode()
    assert "resumed from" in out.decode()
    out, _ = reference.communicate(timeout=90)
    assert reference.returncode == 0, out.decode()

    ref_rows, got_rows = _rows(ref_dir / "log.csv"), _rows(killed_dir / "log.csv")
    assert [int(r["step"]) for r in got_rows] == list(range(1, 19))  # no step twice, none missing
    assert [(r["step"], r["lr"], r["loss"], r["abs_err"]) for r in got_rows] == \
           [(r["step"], r["lr"], r["loss"], r["abs_err"]) for r in ref_rows]  # bitwise (repr strings)
    assert [r["loss"] for r in _rows(killed_dir / "epochs.csv")] == [r["loss"] for r in _rows(ref_dir / "epochs.csv")]
    ref_state, got_state = load_checkpoint(ref_dir)["state_dict"], load_checkpoint(killed_dir)["state_dict"]
    assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state)


if __name__ == "__main__":
    result = run_toy_job(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    print(f"done: {result.epochs_done} epochs, {result.steps} steps, resumed_from={result.resumed_from}")
