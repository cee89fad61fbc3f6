"""The batched BSS Eval equals mir_eval.separation.bss_eval_sources (no permutation) within 0.01 dB."""
from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from avfusion.metrics.block_toeplitz import block_levinson_solve
from avfusion.metrics.bss_eval_fast import bss_eval_sources_batch

TOLERANCE_DB = 0.01
CLIPSEP_PAIRS = ["music-vggsound/accordion-PohzBumrY2Q+K-8KURljE8_FA",
                 "music-vggsound/acoustic_guitar-X4UWEifacwI+H-2HSizQ0OJHM",
                 "music-vggsound/violin-WjwOm5pJlI0+3-O3HG59u1yek",
                 "vggsound-vggsound/3-x3HIdaOkLQ4+3-43FtU9nHMxc",
                 "vggsound-vggsound/G-gGeyOIugeEs+M-lMei2nMceX4",
                 "vggsound-vggsound/u-6uCeOOJXK24+X-lX8Csm309Ls"]


def mir_eval_sources(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """(B,S,T) -> (B, 3, S): mir_eval's sdr, sir, sar per pair."""
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return np.array([mir_eval.separation.bss_eval_sources(r, e, compute_permutation=False)[:3]
                         for r, e in zip(refs, ests)])


def load_clipsep(testdata, folder):
    wav = {name: sf.read(testdata / "clipsep_mixtures" / folder / f"{name}.wav")[0]
           for name in ("gt", "int", "mix", "pred")}
    return wav


@pytest.fixture(scope="module")
def clipsep(testdata):
    return [load_clipsep(testdata, folder) for folder in CLIPSEP_PAIRS]


def test_clipsep_estimates_match_mir_eval_and_published_sdr(clipsep, testdata):
    torch.set_num_threads(1)
    refs = np.stack([[w["gt"], w["int"]] for w in clipsep])              # (6, 2, 65280)
    ests = np.stack([[w["pred"], w["mix"] - w["pred"]] for w in clipsep])
    fast = np.stack(bss_eval_sources_batch(refs, ests), 1)               # (6, 3, 2)
    np.testing.assert_allclose(fast, mir_eval_sources(refs, ests), atol=TOLERANCE_DB, rtol=0)
    with open(testdata / "clipsep_mixtures" / "reference_metrics.csv") as fh:
        published = {row["folder"]: float(row["sdr_pred"]) for row in csv.DictReader(fh)}
    np.testing.assert_allclose(fast[:, 0, 0], [published[f] for f in CLIPSEP_PAIRS], atol=0.006)


def test_mixture_as_estimate_matches_sdr_sir_and_floors_rounding_level_sar(clipsep):
    refs = np.stack([[w["gt"], w["int"]] for w in clipsep[:2]])
    ests = np.stack([[w["gt"] + w["int"]] * 2 for w in clipsep[:2]])     # exact sum of the references
    fast = np.stack(bss_eval_sources_batch(refs, ests), 1)
    reference = mir_eval_sources(refs, ests)
    np.testing.assert_allclose(fast[:, :2], reference[:, :2], atol=TOLERANCE_DB, rtol=0)
    assert (reference[:, 2] > 120).all() and (fast[:, 2] > 120).all()   # rounding noise in both
    assert np.isfinite(fast).all()


@pytest.mark.parametrize("n_src,n_samples,n_pairs", [(2, 24000, 2), (3, 4000, 2), (1, 6000, 2)])
def test_random_pairs_match_mir_eval(n_src, n_samples, n_pairs):
    torch.set_num_threads(1)
    rng = np.random.default_rng(n_src)
    refs = rng.standard_normal((n_pairs, n_src, n_samples))
    mixing = np.eye(n_src) + 0.3 * rng.standard_normal((n_src, n_src))
    filtered = np.stack([[np.convolve(r, rng.standard_normal(8) / 3, mode="same") for r in pair] for pair in refs])
    ests = np.einsum("st,btn->bsn", mixing, filtered) + 0.2 * rng.standard_normal(refs.shape)
    fast = np.stack(bss_eval_sources_batch(refs, ests), 1)
    np.testing.assert_allclose(fast, mir_eval_sources(refs, ests), atol=TOLERANCE_DB, rtol=0)


def test_torch_and_c_solvers_give_the_same_metrics(clipsep):
    refs = np.stack([[w["gt"], w["int"]] for w in clipsep[:2]])[..., :16000]
    ests = np.stack([[w["pred"], w["mix"] - w["pred"]] for w in clipsep[:2]])[..., :16000]
    via_c = np.stack(bss_eval_sources_batch(refs, ests, solver="c"), 1)
    via_torch = np.stack(bss_eval_sources_batch(refs, ests, solver="torch"), 1)
    np.testing.assert_allclose(via_c, via_torch, atol=1e-8, rtol=0)


@pytest.mark.parametrize("backend", ["c", "torch"])
def test_block_levinson_equals_dense_solve(backend):
    rng = np.random.default_rng(1)
    n_blocks, size, n_rhs = 40, 3, 2
    signals = rng.standard_normal((size, 400))
    # Γ(k)_ij = sum_t s_i(t+k) s_j(t): the Gram of delayed copies, symmetric positive definite
    gamma = np.zeros((2 * n_blocks - 1, size, size))
    for k in range(-(n_blocks - 1), n_blocks):
        shifted = np.roll(np.pad(signals, ((0, 0), (0, n_blocks))), k, axis=1)  # s_i(t - k) padded
        gamma[n_blocks - 1 + k] = np.pad(signals, ((0, 0), (0, n_blocks))) @ shifted.T
    gamma = np.stack([gamma, gamma])                                               # (2, 2L-1, S, S)
    dense = np.block([[gamma[0, n_blocks - 1 + c - a] for c in range(n_blocks)] for a in range(n_blocks)])
    assert np.allclose(dense, dense.T)
    rhs = rng.standard_normal((2, n_blocks, size, n_rhs))
    x = block_levinson_solve(gamma, rhs, backend=backend).numpy()
    expected = np.linalg.solve(dense, rhs[0].reshape(n_blocks * size, n_rhs))
    np.testing.assert_allclose(x[0].reshape(n_blocks * size, n_rhs), expected, rtol=1e-9, atol=1e-12)


def test_silent_source_is_an_error_naming_the_pair():
    refs = np.random.default_rng(0).standard_normal((3, 2, 1000))
    ests = refs.copy()
    ests[2, 1] = 0.0
    with pytest.raises(ValueError, match=r"ests\[2, 1\] is all zeros"):
        bss_eval_sources_batch(refs, ests)
    with pytest.raises(ValueError, match="same shape"):
        bss_eval_sources_batch(refs, ests[:, :1])


def test_identical_references_match_mir_eval_least_squares_instead_of_failing():
    """Two sources that are the same signal (a pair of two copies of one clip, as the rehearsal's
    MUSIC layout made; found by the rehearsal): the Gram system is singular, or nearly so after rounding,
    mir_eval solves it (LU, or least squares), and so do we (the chunk goes to mir_eval) instead of
    raising LinAlgError (exact copies) or reporting SIR/SAR NaN (copies up to rounding)."""
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((3, 2, 4000))
    refs[1, 1] = refs[1, 0]                                   # pair 1: the same clip twice
    refs[2, 1] = refs[2, 0] * (1 + 1e-9)                      # pair 2: the same up to rounding
    ests = refs + 0.3 * rng.standard_normal(refs.shape)
    got = np.stack(bss_eval_sources_batch(refs, ests, chunk_size=1), axis=1)   # (B, 3, S)
    want = mir_eval_sources(refs, ests)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=0.01)
