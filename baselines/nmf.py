"""NMF separation baseline (Table 1 "NMF"): factorise the mixture magnitude, cluster the parts.

Unsupervised and blind (no image): V ~= W H with multiplicative updates (Lee & Seung 2001,
KL divergence by default, Euclidean selectable), then the k components are split into two
sources by k-means on a timbre descriptor of each basis vector (MFCCs of the spectral
basis, after Spiertz & Gnann 2009) plus its normalised activation envelope. Each source's
estimate is the Wiener-like soft mask (W_s H_s) / (W H) on the mixture magnitude.

    masks = nmf_masks(mag)        # mag (F, T) >= 0  ->  masks (2, F, T) summing to 1
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.fft import dct

EPS = 1e-12


@dataclass
class NMFConfig:
    n_components: int = 24
    n_iter: int = 200
    beta: Literal["kl", "euclidean"] = "kl"
    n_mfcc: int = 13              # MFCC coefficients 1..n_mfcc of each basis (coefficient 0 = level, dropped)
    activation_weight: float = 0.5  # weight of the activation envelope in the clustering feature
    seed: int = 0

    def validate(self) -> None:
        from avfusion.config import ConfigError

        if self.n_components < 2:
            raise ConfigError(f"config key 'nmf.n_components': need >= 2 components, got {self.n_components}")
        if self.n_iter < 1:
            raise ConfigError(f"config key 'nmf.n_iter': need >= 1 iteration, got {self.n_iter}")


def nmf(V: np.ndarray, k: int, n_iter: int = 200, beta: str = "kl", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative-update NMF. V (F, T) >= 0 -> W (F, k), H (k, T)."""
    if V.ndim != 2 or (V < 0).any():
        raise ValueError(f"nmf: V must be a non-negative 2-D matrix, got shape {V.shape}")
    rng = np.random.default_rng(seed)
    F, T = V.shape
    scale = np.sqrt(V.mean() / k) + EPS
    W = rng.uniform(0.5, 1.5, (F, k)) * scale  # (F, k)
    H = rng.uniform(0.5, 1.5, (k, T)) * scale  # (k, T)
    for _ in range(n_iter):
        if beta == "kl":
            WH = W @ H + EPS
            H *= (W.T @ (V / WH)) / (W.sum(0)[:, None] + EPS)
            WH = W @ H + EPS
            W *= ((V / WH) @ H.T) / (H.sum(1)[None, :] + EPS)
        elif beta == "euclidean":
            H *= (W.T @ V) / (W.T @ W @ H + EPS)
            W *= (V @ H.T) / (W @ H @ H.T + EPS)
        else:
            raise ValueError(f"nmf: unknown beta {beta!r}; expected 'kl' or 'euclidean'")
        norm = W.sum(0) + EPS  # keep the bases at unit L1 norm; move the scale into H
        W /= norm
        H *= norm[:, None]
    return W, H


def kl_divergence(V: np.ndarray, WH: np.ndarray) -> float:
    """Generalised KL divergence D(V || WH) (what the 'kl' updates decrease)."""
    return float(np.sum(V * np.log((V + EPS) / (WH + EPS)) - V + WH))


def _triangular_filterbank(n_freqs: int, n_bands: int) -> np.ndarray:
    """(n_bands, n_freqs) triangular filters equally spaced on the HTK mel scale over 0..Nyquist."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    nyquist = 8000.0
    freqs = np.linspace(0.0, nyquist, n_freqs)
    edges = hz(np.linspace(0.0, mel(nyquist), n_bands + 2))
    fb = np.zeros((n_bands, n_freqs))
    for b in range(n_bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        up = (freqs - lo) / (mid - lo + EPS)
        down = (hi - freqs) / (hi - mid + EPS)
        fb[b] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


def component_features(W: np.ndarray, H: np.ndarray, n_mfcc: int = 13,
                       activation_weight: float = 0.5) -> np.ndarray:
    """Clustering feature per component: z-scored MFCCs of its basis + its activation envelope."""
    fb = _triangular_filterbank(W.shape[0], 40)  # (40, F)
    log_bands = np.log(fb @ W + 1e-8)  # (40, k)
    mfcc = dct(log_bands, type=2, axis=0, norm="ortho")[1:n_mfcc + 1].T  # (k, n_mfcc)
    mfcc = (mfcc - mfcc.mean(0)) / (mfcc.std(0) + 1e-8)
    env = H / (np.linalg.norm(H, axis=1, keepdims=True) + EPS)  # (k, T) unit-norm activations
    env = env - env.mean(1, keepdims=True)
    env = env / (np.linalg.norm(env, axis=1, keepdims=True) + EPS) * np.sqrt(n_mfcc)
    return np.concatenate([mfcc, activation_weight * env], axis=1)  # (k, n_mfcc + T)


def cluster_components(features: np.ndarray, n_sources: int = 2, seed: int = 0) -> np.ndarray:
    """k-means labels (k,) in 0..n_sources-1 (a degenerate input may leave a source empty: its mask
    is then 0 and its estimate silent, which the evaluation skips and counts)."""
    from sklearn.cluster import KMeans  # imported here: the Snakefile imports task modules to check configs

    return KMeans(n_clusters=n_sources, n_init=10, random_state=seed).fit_predict(features)


def nmf_masks(mag: np.ndarray, cfg: NMFConfig | None = None, n_sources: int = 2) -> np.ndarray:
    """Mixture magnitude (F, T) -> soft masks (n_sources, F, T), one per cluster of NMF components."""
    cfg = cfg or NMFConfig()
    W, H = nmf(mag.astype(np.float64), cfg.n_components, cfg.n_iter, cfg.beta, cfg.seed)
    labels = cluster_components(component_features(W, H, cfg.n_mfcc, cfg.activation_weight),
                                n_sources, cfg.seed)
    parts = np.stack([W[:, labels == s] @ H[labels == s] for s in range(n_sources)])  # (S, F, T)
    return parts / (parts.sum(0, keepdims=True) + EPS)
