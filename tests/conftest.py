"""Shared fixtures: the real test media in ../shared/testdata, deterministic torch."""
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
    return _testdata_dir()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _deterministic_torch():
    import torch

    torch.manual_seed(0)
    yield
