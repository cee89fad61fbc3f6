"""SDR / SIR / SAR of separated sources (BSS Eval v3, no permutation).

Convention: DeepAVFusion `eval_avsrcsep.py` (= Sound of Pixels `main.py::calc_metrics`):
`mir_eval.separation.bss_eval_sources(refs, ests, compute_permutation=False)` per mixture,
every estimate conditioned on its own source; a mixture is skipped (and counted) when any
reference or any estimate has energy sum(x^2) < 1e-5 (mir_eval rejects silent sources);
the reported SDR/SIR/SAR are means over all (mixture, source) values. `sdr_mix` is the SDR of
the mixture used as the estimate of every source (Sound of Pixels' baseline).

Backends: "mir_eval" (the reference) and "fast"
(`avfusion.metrics.bss_eval_fast.bss_eval_sources_batch`, same numbers within 0.01 dB).

    scores = separation_metrics(refs (B,S,T), ests (B,S,T), mix=mix (B,T))
    evaluator = SeparationEvaluator(); evaluator.update(refs, ests, mix); evaluator.summary()
"""
from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

SILENCE_ENERGY = 1e-5  # sum(x^2) below this: the mixture is skipped (DeepAVFusion eval_avsrcsep)


def _has_fast_backend() -> bool:
    try:
        from . import bss_eval_fast  # noqa: F401
    except ImportError:
        return False
    return hasattr(bss_eval_fast, "bss_eval_sources_batch")


# "fast" once avfusion.metrics.bss_eval_fast exists (it is checked against mir_eval in its tests);
# "mir_eval" otherwise, so the default always works.
DEFAULT_BACKEND = "fast" if _has_fast_backend() else "mir_eval"


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _bss_eval_mir_eval(refs: np.ndarray, ests: np.ndarray) -> tuple[np.ndarray, ...]:
    """refs, ests (B,S,T) -> sdr, sir, sar each (B,S) with mir_eval, one mixture at a time."""
    import mir_eval

    out = np.zeros((3,) + refs.shape[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for b in range(refs.shape[0]):
            sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(
                refs[b], ests[b], compute_permutation=False)
            out[:, b] = sdr, sir, sar
    return out[0], out[1], out[2]


def _bss_eval_fast(refs: np.ndarray, ests: np.ndarray) -> tuple[np.ndarray, ...]:
    try:
        from .bss_eval_fast import bss_eval_sources_batch
    except ImportError as err:
        raise ImportError("separation backend 'fast' needs avfusion.metrics.bss_eval_fast."
                          f"bss_eval_sources_batch ({err}); use backend='mir_eval'") from None
    sdr, sir, sar = bss_eval_sources_batch(refs, ests)
    return _as_numpy(sdr), _as_numpy(sir), _as_numpy(sar)


def bss_eval(refs, ests, backend: Literal["fast", "mir_eval"] | None = None) -> tuple[np.ndarray, ...]:
    """refs, ests (B,S,T) -> (sdr, sir, sar) each (B,S) in dB; no permutation, no skipping."""
    refs, ests = _as_numpy(refs), _as_numpy(ests)
    if refs.ndim != 3 or refs.shape != ests.shape:
        raise ValueError(f"refs and ests must both be (B, S, T); got {refs.shape} and {ests.shape}")
    backend = backend or DEFAULT_BACKEND
    if backend == "mir_eval":
        return _bss_eval_mir_eval(refs, ests)
    if backend == "fast":
        return _bss_eval_fast(refs, ests)
    raise ValueError(f"unknown separation backend {backend!r}; expected 'fast' or 'mir_eval'")


def silent_mixtures(refs, ests) -> np.ndarray:
    """(B,) bool: True where any reference or estimate has energy sum(x^2) < 1e-5."""
    refs, ests = _as_numpy(refs), _as_numpy(ests)
    silent = ((refs ** 2).sum(-1) < SILENCE_ENERGY) | ((ests ** 2).sum(-1) < SILENCE_ENERGY)  # (B, S)
    return silent.any(-1)


def separation_metrics(refs, ests, mix=None,
                       backend: Literal["fast", "mir_eval"] | None = None) -> dict:
    """Per-source scores of the non-silent mixtures.

    refs, ests: (B,S,T) or (S,T) waveforms; mix: (B,T) or (T,) mixture (optional).
    Returns {"sdr", "sir", "sar": (N,S) arrays over the N kept mixtures, "sdr_mix": (N,S) or None,
    "kept": (B,) bool, "n_pairs": N, "n_skipped": B - N}.
    """
    refs, ests = _as_numpy(refs), _as_numpy(ests)
    if refs.ndim == 2:
        refs, ests = refs[None], ests[None]  # (1, S, T)
        mix = None if mix is None else _as_numpy(mix)[None]
    if refs.shape != ests.shape or refs.ndim != 3:
        raise ValueError(f"refs and ests must both be (B, S, T); got {refs.shape} and {ests.shape}")
    kept = ~silent_mixtures(refs, ests)
    n_src = refs.shape[1]
    result = {"kept": kept, "n_pairs": int(kept.sum()), "n_skipped": int((~kept).sum()), "sdr_mix": None}
    if kept.any():
        result["sdr"], result["sir"], result["sar"] = bss_eval(refs[kept], ests[kept], backend)
    else:
        result["sdr"] = result["sir"] = result["sar"] = np.zeros((0, n_src))
    if mix is not None:
        mix = _as_numpy(mix)
        if mix.shape != (refs.shape[0], refs.shape[2]):
            raise ValueError(f"mix must be (B, T) = {(refs.shape[0], refs.shape[2])}; got {mix.shape}")
        mix_as_est = np.repeat(mix[:, None], n_src, axis=1)  # (B, S, T)
        result["sdr_mix"] = (bss_eval(refs[kept], mix_as_est[kept], backend)[0] if kept.any()
                             else np.zeros((0, n_src)))
    return result


def si_sdr(ref, est, zero_mean: bool = True) -> np.ndarray:
    """Scale-invariant SDR in dB over the last axis (Le Roux et al. 2019; zero-mean by default)."""
    ref, est = _as_numpy(ref), _as_numpy(est)
    if zero_mean:
        ref = ref - ref.mean(-1, keepdims=True)
        est = est - est.mean(-1, keepdims=True)
    alpha = (ref * est).sum(-1, keepdims=True) / (ref ** 2).sum(-1, keepdims=True)
    target = alpha * ref
    return 10 * np.log10((target ** 2).sum(-1) / ((target - est) ** 2).sum(-1))


class SeparationEvaluator:
    """Accumulates `separation_metrics` over batches; `summary()` gives the metrics.json keys."""

    def __init__(self, backend: Literal["fast", "mir_eval"] | None = None):
        self.backend = backend
        self.scores: dict[str, list[np.ndarray]] = {"sdr": [], "sir": [], "sar": [], "sdr_mix": []}
        self.n_pairs = 0
        self.n_skipped = 0

    def update(self, refs, ests, mix=None) -> dict:
        result = separation_metrics(refs, ests, mix, backend=self.backend)
        for key in self.scores:
            if result[key] is not None:
                self.scores[key].append(result[key])
        self.n_pairs += result["n_pairs"]
        self.n_skipped += result["n_skipped"]
        return result

    def summary(self) -> dict:
        """{"sdr", "sir", "sar", "sdr_mix"} = mean over (mixture, source) in dB, "n_pairs", "n_skipped"."""
        if self.n_pairs == 0:
            raise ValueError(f"no mixture left to score: all {self.n_skipped} were silent "
                             f"(energy < {SILENCE_ENERGY})")
        out = {key: float(np.concatenate(vals).mean()) for key, vals in self.scores.items() if vals}
        out.update(n_pairs=self.n_pairs, n_skipped=self.n_skipped)
        return out
