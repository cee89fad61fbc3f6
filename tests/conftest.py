"""Shared fixtures: the real test media in ../shared/testdata, deterministic torch.

Without the test media (a clone from elsewhere) the tests that need them are skipped with the
reason; set AVFUSION_TESTDATA to the folder if it lives elsewhere. Under CI (CI=true) a missing
folder is an error, so that CI never passes by skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(autouse=True)
def _deterministic_torch():
    import torch

    torch.manual_seed(0)
    yield
