"""RPCA separation baseline (Table 1 "RPCA"): low-rank + sparse split of the mixture magnitude.

Robust PCA by the inexact augmented Lagrange multiplier method (Lin, Chen & Ma 2010):
    min ||L||_* + lam ||S||_1  s.t.  M = L + S,   lam = lam_scale / sqrt(max(F, T)),
as used for monaural separation by Huang et al. (ICASSP 2012): the sparse part S is one
source (the varying, "foreground" one), the low-rank part L the other (the repetitive
background). Masks are binary |S| > gain |L| (Huang et al.) or the soft ratio |S| / (|S| + |L|).

    masks = rpca_masks(mag)       # mag (F, T) >= 0  ->  masks (2, F, T): [sparse, low-rank]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class RPCAConfig:
    lam_scale: float = 1.0
    max_iter: int = 100
    tol: float = 1e-7
    mask: Literal["binary", "soft"] = "binary"
    gain: float = 1.0  # binary mask: sparse wins where |S| > gain * |L|

    def validate(self) -> None:
        from avfusion.config import ConfigError

        if self.lam_scale <= 0:
            raise ConfigError(f"config key 'rpca.lam_scale': must be > 0, got {self.lam_scale}")
        if self.max_iter < 1:
            raise ConfigError(f"config key 'rpca.max_iter': need >= 1 iteration, got {self.max_iter}")


def _shrink(X: np.ndarray, tau: float) -> np.ndarray:
    return np.sign(X) * np.maximum(np.abs(X) - tau, 0.0)


def _svd_threshold(X: np.ndarray, tau: float) -> tuple[np.ndarray, int]:
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    s = np.maximum(s - tau, 0.0)
    rank = int((s > 0).sum())
    return (U[:, :rank] * s[:rank]) @ Vt[:rank], rank


def rpca(M: np.ndarray, lam: float | None = None, max_iter: int = 100,
         tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray, int]:
    """Inexact ALM RPCA. M (F, T) -> L (F, T) low-rank, S (F, T) sparse, iterations used."""
    if M.ndim != 2:
        raise ValueError(f"rpca: M must be 2-D, got shape {M.shape}")
    M = M.astype(np.float64)
    lam = lam if lam is not None else 1.0 / np.sqrt(max(M.shape))
    norm_fro = np.linalg.norm(M) + 1e-30
    spectral = np.linalg.norm(M, 2)
    Y = M / max(spectral, np.abs(M).max() / lam)  # dual variable initialisation (Lin et al., alg. 5)
    mu, rho = 1.25 / spectral, 1.5
    mu_max = mu * 1e7
    L = np.zeros_like(M)
    S = np.zeros_like(M)
    for it in range(1, max_iter + 1):
        L, _ = _svd_threshold(M - S + Y / mu, 1.0 / mu)
        S = _shrink(M - L + Y / mu, lam / mu)
        residual = M - L - S
        Y = Y + mu * residual
        mu = min(mu * rho, mu_max)
        if np.linalg.norm(residual) / norm_fro < tol:
            break
    return L, S, it


def rpca_masks(mag: np.ndarray, cfg: RPCAConfig | None = None) -> np.ndarray:
    """Mixture magnitude (F, T) -> masks (2, F, T): [sparse source, low-rank source]."""
    cfg = cfg or RPCAConfig()
    lam = cfg.lam_scale / np.sqrt(max(mag.shape))
    L, S, _ = rpca(mag, lam, cfg.max_iter, cfg.tol)
    L, S = np.abs(L), np.abs(S)
    if cfg.mask == "binary":
        sparse = (S > cfg.gain * L).astype(np.float64)
    else:
        sparse = S / (S + L + 1e-12)
    return np.stack([sparse, 1.0 - sparse])  # (2, F, T)
