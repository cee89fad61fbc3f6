"""A run folder belongs to one process, is resumed only with its own config, and keeps one clean
format: two `avfusion pretrain --out X` at once never share X; a stale lock is taken over, saying
so; a resume with another seed or batch size is refused naming the keys (`--fresh` starts again,
moving the old run aside); files are group-readable under the umask; log.csv keeps one line ending.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avfusion.cli import main as cli_main
from avfusion.engine import OptimConfig, checkpoint_path, train
from avfusion.runlock import LOCK_NAME, RunFolderBusy, RunLock

AVFUSION = str(Path(sys.executable).parent / "avfusion")


@pytest.fixture(scope="module")
def smoke_manifest(tmp_path_factory):
    from avfusion.data.tuxav import make_tuxav

    out = tmp_path_factory.mktemp("tuxav_smoke")
    make_tuxav(out, "smoke", 0)
    return out


def pretrain_args(manifest, out, *overrides, steps=2, epochs=1):
    """`avfusion pretrain` at smoke scale, `steps` optimizer steps per epoch, no kNN probe."""
    args = ["pretrain", "--out", str(out)]
    for item in [f"data.manifest={manifest}", "model.preset=deepavfusion-smoke", "device=cpu",
                 "data.image_size=64", "optim.batch_size=6", f"optim.epochs={epochs}",
                 f"optim.max_steps_per_epoch={steps}", "knn.enabled=false", *overrides]:
        args += ["--set", item]
    return args


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_pretrain_processes_on_one_folder_one_runs_the_other_names_the_owner(smoke_manifest, tmp_path):
    """Both start at the same moment and reach the lock after the same start-up work; the loser
    arrives while the winner still builds its data and trains 6 steps."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [AVFUSION, *pretrain_args(smoke_manifest, out, steps=3, epochs=2)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, [(p.returncode, err[-500:]) for p, _, err in results]
    (winner, _, _), = [r for r in results if r[0].returncode == 0]
    (loser, _, loser_err), = [r for r in results if r[0].returncode != 0]
    assert loser.returncode == 1
    assert f"is in use by host={os.uname().nodename} pid={winner.pid}" in loser_err
    assert "Traceback" not in loser_err and len(loser_err.strip().splitlines()) == 1
    assert [int(r["step"]) for r in _rows(out / "log.csv")] == [1, 2, 3, 4, 5, 6]   # one row per step
    assert not (out / LOCK_NAME).exists()   # released on exit


def test_lock_is_exclusive_within_a_process_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    with RunLock(tmp_path / "run"):
        text = (tmp_path / "run" / LOCK_NAME).read_text()
        assert f"pid={os.getpid()}" in text
        with pytest.raises(RunFolderBusy, match=f"in use by host=.* pid={os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    # a lock file left by a process that died (no flock held any more)
    (tmp_path / "run" / LOCK_NAME).write_text("host=node7 pid=999999 since=2026-01-01T00:00:00\n")
    messages = []
    with RunLock(tmp_path / "run", announce=messages.append):
        assert f"pid={os.getpid()}" in (tmp_path / "run" / LOCK_NAME).read_text()
    assert messages == [f"{tmp_path / 'run' / LOCK_NAME}: taking over a stale lock "
                        "(host=node7 pid=999999 since=2026-01-01T00:00:00: that process is gone)"]


def test_resume_with_another_seed_or_batch_is_refused_naming_the_keys(smoke_manifest, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert cli_main(pretrain_args(smoke_manifest, out)) == 0
    ckpt = checkpoint_path(out).read_bytes()
    log = (out / "log.csv").read_bytes()
    capsys.readouterr()

    assert cli_main(pretrain_args(smoke_manifest, out, "seed=1", "optim.batch_size=4")) == 1
    err = capsys.readouterr().err
    assert "differing keys: optim.batch_size (6 -> 4), seed (0 -> 1)" in err and "--fresh" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert checkpoint_path(out).read_bytes() == ckpt and (out / "log.csv").read_bytes() == log
    assert cli_main(pretrain_args(smoke_manifest, out, "model.preset=deepavfusion-tiny")) == 1
    assert "differing keys: model.preset ('deepavfusion-smoke' -> 'deepavfusion-tiny')" in capsys.readouterr().err

    # keys that do not change the numbers (device, workers, time budget) may differ
    assert cli_main(pretrain_args(smoke_manifest, out, "optim.time_budget_s=1000", "data.workers=0")) == 0
    assert checkpoint_path(out).read_bytes() == ckpt

    # --fresh: the old run moves aside whole, the new one starts from scratch
    assert cli_main(pretrain_args(smoke_manifest, out, "seed=1") + ["--fresh"]) == 0
    (old,) = tmp_path.glob("run.replaced-*")
    assert checkpoint_path(old).read_bytes() == ckpt and (old / "log.csv").read_bytes() == log
    assert [int(r["step"]) for r in _rows(out / "log.csv")] == [1, 2]
    assert torch.load(checkpoint_path(out), weights_only=False)["config"]["seed"] == 1


def test_results_follow_the_umask_and_a_resumed_log_has_one_line_ending(tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    loss_fn = lambda m, b: (m(b[0]).pow(2).mean(), {})  # noqa: E731
    old = os.umask(0o027)
    try:
        first = train(torch.nn.Linear(2, 1), loss_fn, data, OptimConfig(batch_size=4, epochs=3, lr=0.1,
                      optimizer="sgd", time_budget_s=0.0), tmp_path, device="cpu")
        assert first.stopped_early and first.steps == 2
        again = train(torch.nn.Linear(2, 1), loss_fn, data, OptimConfig(batch_size=4, epochs=3, lr=0.1,
                      optimizer="sgd"), tmp_path, device="cpu")
    finally:
        os.umask(old)
    assert again.resumed_from == 1 and again.steps == 6
    raw = (tmp_path / "log.csv").read_bytes()
    assert b"\r" not in raw and raw.count(b"\n") == 7   # header + 6 steps, all LF
    assert (checkpoint_path(tmp_path).stat().st_mode & 0o777) == 0o640   # 0666 minus umask 027
    assert ((tmp_path / "log.csv").stat().st_mode & 0o777) == 0o640


def test_a_job_that_fails_at_start_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(pretrain_args(tmp_path / "no_such_manifest", out)) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_manifest" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="manifest not found"):   # --debug: the traceback instead
        cli_main(pretrain_args(tmp_path / "no_such_manifest", out) + ["--debug"])
    assert not out.exists()
