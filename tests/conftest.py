"""Shared fixtures: the real test media in ../shared/testdata, deterministic torch, and the benchmarks and
pretraining that several test modules use, built once per session.

Without the test media (a clone from elsewhere) the tests that need them are skipped with the
reason; set AVFUSION_TESTDATA to the folder if it lives elsewhere. Under CI (CI=true) a missing
folder is an error, so that CI never passes by skipping.

Learning tests (`@pytest.mark.learning`) take their training seed from `--learning-seed` (default 0) and
check each outcome with `margin_check(name, ours, floor, margin)`, which asserts `ours > floor + margin`
and, when AVFUSION_MARGIN_LOG names a CSV file, appends the measurement to it.
`python benchmarks/learning_margins.py --seeds 0 1 2 3` runs them over seeds and tabulates the gaps, from which
each asserted margin is set (benchmarks/README.md).
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# make test runs pytest-xdist workers (-n auto); each worker is its own pytest session. The expensive session
# fixtures (tiny tuxav, the tiny AV-MAE pretraining) are built once per run in the workers' common base temp under a
# file lock (_build_once); the test SLURM cluster is per worker (its own folder, ports and SLURM_CONF). Keeping tests
# on one worker with --dist loadgroup does not work with pytest 9.2: xdist 3.8 marks the group by setting
# item._nodeid, which pytest 9 no longer reads.


def pytest_addoption(parser):
    parser.addoption("--learning-seed", type=int, default=0,
                     help="training seed of the learning tests (benchmarks/learning_margins.py runs several)")


def _testdata_dir() -> Path:
    env = os.environ.get("AVFUSION_TESTDATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "testdata", REPO.parent.parent / "shared" / "testdata"]
    for cand in candidates:
        if cand.is_dir():
            return cand
    raise RuntimeError(f"real test media not found; looked in {[str(c) for c in candidates]}; "
                       "set AVFUSION_TESTDATA to the shared/testdata folder")


@pytest.fixture(scope="session")
def testdata() -> Path:
    try:
        return _testdata_dir()
    except RuntimeError as err:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def learning_seed(request) -> int:
    return request.config.getoption("--learning-seed")


@pytest.fixture(autouse=True)
def _deterministic_torch(learning_seed):
    import torch

    torch.manual_seed(learning_seed)
    yield


@pytest.fixture(scope="module")
def single_thread():
    """torch, BLAS and OpenMP on one thread for a module (2 shared cores: more threads only spin against each
    other), restored afterwards. A module asks for it with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def margin_check(request, learning_seed):
    """`margin_check(name, ours, floor, margin)`: assert ours > floor + margin. With AVFUSION_MARGIN_LOG set
    (benchmarks/learning_margins.py) every check is appended to that CSV and a failure is raised when the
    test ends, so that one test's later checks are still measured."""
    log = os.environ.get("AVFUSION_MARGIN_LOG")
    failures = []

    def check(name: str, ours: float, floor: float, margin: float | None) -> None:
        """margin None: measured and logged, not asserted (an outcome that does not hold at test budgets)."""
        message = f"{name}: {ours:.4f} <= {floor:.4f} + {margin} (seed {learning_seed})"
        if not log:
            assert margin is None or ours > floor + margin, message
            return
        new = not Path(log).exists()
        with open(log, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["test", "check", "seed", "ours", "floor", "gap", "margin_when_measured"])
            writer.writerow([request.node.nodeid, name, learning_seed, f"{ours:.4f}", f"{floor:.4f}",
                             f"{ours - floor:.4f}", margin])
        if margin is not None and not ours > floor + margin:
            failures.append(message)

    yield check
    assert not failures, "; ".join(failures)


def _cache_dir() -> Path | None:
    """AVFUSION_TEST_CACHE: a folder that keeps the tiny benchmark and the tiny pretrainings between
    sessions (for measuring margins over seeds); delete it when tuxav or the model code changes."""
    cache = os.environ.get("AVFUSION_TEST_CACHE")
    return Path(cache) if cache else None


@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """Hold an exclusive lock on `lock_file` (fcntl; released when the block ends or the process dies)."""
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(tmp_path_factory, name: str, build, done_file: str, cacheable: bool = True) -> Path:
    """The folder `name`, made by `build(folder)` once per test run, not once per pytest-xdist worker.

    The folder lives in the workers' common base temp (their session's own base temp without xdist; in
    AVFUSION_TEST_CACHE when set and `cacheable`); a file lock makes every other worker wait for the one that
    builds it, and `done_file` inside it says it is complete (a build killed half-way is built again)."""
    cache = _cache_dir() if cacheable else None
    if cache:
        root = cache
    else:
        base = tmp_path_factory.getbasetemp()
        root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built_once"
    root.mkdir(parents=True, exist_ok=True)
    out = root / name
    with _exclusive(root / f"{name}.lock"):
        if not (out / done_file).is_file():
            build(out)
    return out


@pytest.fixture(scope="session")
def tuxav_smoke(tmp_path_factory) -> Path:
    """The smoke tuxav benchmark (48 clips, 6 classes, data seed 0), generated once per test run; read only."""
    from avfusion.data.tuxav import make_tuxav

    return _build_once(tmp_path_factory, "smoke", lambda out: make_tuxav(out, "smoke", 0), "manifest.csv",
                       cacheable=False)


def _tiny_tuxav(tmp_path_factory, name: str, distractors: bool) -> Path:
    """Generate (or reuse from AVFUSION_TEST_CACHE) one tiny tuxav benchmark, data seed 0."""
    from avfusion.data.tuxav import make_tuxav

    return _build_once(tmp_path_factory, name, lambda out: make_tuxav(out, "tiny", 0, distractors=distractors),
                       "manifest.csv")


@pytest.fixture(scope="session")
def tuxav_tiny(tmp_path_factory) -> Path:
    """The tiny tuxav benchmark (1920 clips, 16 classes, data seed 0; ~30 CPU-s), generated once; read only."""
    return _tiny_tuxav(tmp_path_factory, "tiny", distractors=True)


@pytest.fixture(scope="session")
def tuxav_tiny_solo(tmp_path_factory) -> Path:
    """The same 1920 clips drawn without silent distractors (the sounding object alone in its scene;
    ~30 CPU-s): finding the object then needs no audio. Read only."""
    return _tiny_tuxav(tmp_path_factory, "tiny_solo", distractors=False)


TINY_PRETRAIN = ["data.image_size=64", "device=cpu", "model.preset=deepavfusion-smoke", "optim.batch_size=32",
                 "optim.max_steps_per_epoch=48", "optim.epochs=16", "optim.lr=0.0015", "optim.warmup_epochs=1",
                 "optim.unimodal_lr_ramp=false", "knn.enabled=false"]


@pytest.fixture(scope="session")
def pretrained_tiny(tuxav_tiny, learning_seed, tmp_path_factory) -> Path:
    """A smoke-size encoder AV-MAE-pretrained on tiny tuxav: 768 steps of 32 clips (~2 CPU-min), once per
    session; the run folder (checkpoints/checkpoint_latest.pth) for `init.checkpoint`."""
    import torch

    from avfusion.tasks import pretrain
    from avfusion.tasks.common import load_job_config

    torch.set_num_threads(1)

    def build(out: Path) -> None:
        cfg = load_job_config(pretrain.Config, [], [f"data.manifest={tuxav_tiny}", f"seed={learning_seed}",
                                                    *TINY_PRETRAIN], pretrain.RECIPES)
        pretrain.run(cfg, out)

    return _build_once(tmp_path_factory, f"pre{learning_seed}", build, "metrics.json")
