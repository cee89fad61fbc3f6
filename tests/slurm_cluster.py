"""Session fixture `slurm_cluster`: a real single-node SLURM (munged + slurmctld + slurmd) for tests
marked `@pytest.mark.slurm`, started by scripts/slurm/start.sh and stopped by stop.sh.

    from slurm_cluster import slurm_cluster  # noqa: F401  (in a test module)

    @pytest.mark.slurm
    def test_x(slurm_cluster): ...   # SLURM_CONF is set in os.environ while the session runs

The cluster gets free ports and its own folder, so it does not collide with a cluster a user runs.
Without root or the Debian packages (scripts/install-system.sh) the tests are skipped with that reason.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SlurmCluster:
    folder: Path
    conf: Path

    def squeue_all(self) -> list[dict]:
        """Every job squeue still knows (MinJobAge=3600 s keeps finished ones): id, name, state."""
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T"], capture_output=True,
                             text=True, check=True, timeout=30).stdout
        return [dict(zip(("job_id", "name", "state"), line.split("|"))) for line in out.splitlines() if line]

    def last_job_id(self) -> int:
        """The highest job id squeue still knows (0 if none)."""
        return max((int(job["job_id"]) for job in self.squeue_all()), default=0)

    def jobs_submitted_after(self, job_id: int) -> list[dict]:
        """Jobs with a higher id than `job_id`: slurmctld's ids only grow, so this counts what was submitted since,
        even where older finished jobs have left squeue meanwhile (MinJobAge; counting the whole listing does not)."""
        return [job for job in self.squeue_all() if int(job["job_id"]) > job_id]


_RUNNING: list[SlurmCluster] = []  # test modules each import the fixture: they share one cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    if _RUNNING:
        yield _RUNNING[0]
        return
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM packages missing ({', '.join(missing)}): run scripts/install-system.sh as root")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster runs its daemons as root (SlurmUser=root)")
    folder = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURM_CTLD_PORT=str(_free_port()), SLURMD_PORT=str(_free_port()), SLURM_LINK_ETC="0")
    start = subprocess.run(["bash", str(REPO / "scripts/slurm/start.sh"), str(folder)], env=env,
                           capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        subprocess.run(["bash", str(REPO / "scripts/slurm/stop.sh"), str(folder)], capture_output=True, timeout=60)
        raise RuntimeError(f"scripts/slurm/start.sh failed:\n{start.stderr}")
    conf = folder / "slurm.conf"
    assert start.stdout.strip() == f"export SLURM_CONF={conf}"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    _RUNNING.append(SlurmCluster(folder=folder, conf=conf))
    try:
        yield _RUNNING[0]
    finally:
        _RUNNING.clear()
        subprocess.run(["scancel", "--user", "root"], capture_output=True, timeout=30)
        subprocess.run(["bash", str(REPO / "scripts/slurm/stop.sh"), str(folder)], capture_output=True, timeout=60)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
