"""Blind classical separation baselines of Table 1 (NMF, RPCA) over fixed mixture pairs.

    avfusion classical-separation --config cfg.yaml --set method=rpca --set data.manifest=DIR --out runs/rpca

For every evaluation pair of the manifest folder (`MixtureDataset(..., train=False)`, fixed pairs of
pairs.csv) the mixture waveform is turned into an STFT (n_fft 800, hop 250, Hann: the grid of the
project's separation task), the method splits the magnitude into two masks, each masked complex
STFT (mixture phase) is inverted, and the two estimates are scored with BSS-eval against the two
sources. These methods get no image, so which estimate belongs to which source is unknown:
the estimates are matched to the sources by the permutation with the highest mean SIR (the
`compute_permutation=True` rule of mir_eval). `sdr_mix` scores the mixture itself as both estimates.
A pair whose reference or estimate has energy sum(x^2) < 1e-5 is skipped and counted (spec 4.3).
"""
from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from avfusion.config import ConfigError
from avfusion.progress import CSVLog, Progress
from avfusion.provenance import write_metrics
from avfusion.tasks.common import add_job_arguments, job_main
from baselines.nmf import NMFConfig, nmf_masks
from baselines.rpca import RPCAConfig, rpca_masks

SILENCE_ENERGY = 1e-5
LOG_FIELDS = ["pair", "sdr", "sir", "sar", "sdr_mix", "skipped"]


@dataclass
class STFTConfig:
    n_fft: int = 800
    hop: int = 250


@dataclass
class DataConfig:
    manifest: str = ""          # manifest folder holding manifest.csv and pairs.csv
    split: str = "test"
    image_size: int = 32        # frames are loaded by MixtureDataset but not used by these methods
    max_pairs: int = 0          # 0 = every pair


@dataclass
class Config:
    method: Literal["nmf", "rpca"] = "nmf"
    seed: int = 0
    scale: str = "tiny"
    metrics_backend: Literal["mir_eval", "fast"] = "mir_eval"
    data: DataConfig = field(default_factory=DataConfig)
    stft: STFTConfig = field(default_factory=STFTConfig)
    nmf: NMFConfig = field(default_factory=NMFConfig)
    rpca: RPCAConfig = field(default_factory=RPCAConfig)

    def validate(self) -> None:
        if not self.data.manifest:
            raise ConfigError("config key 'data.manifest': the manifest folder of the mixture pairs is required")


def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, dtype=torch.float64)


def separate(mix: np.ndarray, method: str, cfg: Config) -> np.ndarray:
    """Mixture waveform (T,) -> two estimates (2, T): masked mixture STFT, mixture phase, iSTFT."""
    n_fft, hop = cfg.stft.n_fft, cfg.stft.hop
    window = _window(n_fft)
    spec = torch.stft(torch.from_numpy(mix.astype(np.float64)), n_fft, hop, window=window,
                      center=True, return_complex=True)  # (F, T')
    mag = spec.abs().numpy()
    if method == "nmf":
        masks = nmf_masks(mag, cfg.nmf)
    elif method == "rpca":
        masks = rpca_masks(mag, cfg.rpca)
    else:
        raise ValueError(f"unknown method {method!r}; expected 'nmf' or 'rpca'")
    masked = spec.unsqueeze(0) * torch.from_numpy(masks)  # (2, F, T')
    return torch.istft(masked, n_fft, hop, window=window, center=True, length=len(mix)).numpy()


def bss_eval(refs: np.ndarray, ests: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SDR, SIR, SAR (each (S,)) of estimates (S, T) against references (S, T), no permutation."""
    if backend == "fast":
        from avfusion.metrics.bss_eval_fast import bss_eval_sources_batch

        sdr, sir, sar = bss_eval_sources_batch(torch.as_tensor(refs)[None], torch.as_tensor(ests)[None])
        return (np.asarray(sdr[0], dtype=np.float64), np.asarray(sir[0], dtype=np.float64),
                np.asarray(sar[0], dtype=np.float64))
    import mir_eval

    with warnings.catch_warnings():  # bss_eval_sources is deprecated in mir_eval 0.8, removed in 0.9 (pinned <0.9)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs, ests, compute_permutation=False)
    return sdr, sir, sar


def best_permutation_metrics(refs: np.ndarray, ests: np.ndarray, backend: str = "mir_eval"):
    """Score both assignments of two estimates to two sources; keep the one with the higher mean SIR."""
    best = None
    for order in ([0, 1], [1, 0]):
        scores = bss_eval(refs, ests[order], backend)
        if best is None or scores[1].mean() > best[1].mean():
            best = scores
    return best


def run(cfg: Config, out_dir: Path) -> dict:
    from avfusion.data.datasets import MixtureDataset

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    manifest_dir = Path(cfg.data.manifest)
    dataset = MixtureDataset(manifest_dir, cfg.data.split, train=False, image_size=cfg.data.image_size)
    n_total = len(dataset) if cfg.data.max_pairs <= 0 else min(cfg.data.max_pairs, len(dataset))
    if n_total == 0:
        raise ValueError(f"{manifest_dir}: no separation pairs in split {cfg.data.split!r}")
    log_path = out_dir / "log.csv"
    log_path.unlink(missing_ok=True)  # deterministic job: a rerun rewrites the log
    log = CSVLog(log_path, LOG_FIELDS)
    progress = Progress(n_total, desc=f"classical-separation {cfg.method}", every=10)
    sdrs, sirs, sars, sdr_mixes = [], [], [], []
    n_skipped = 0
    for i in range(n_total):
        item = dataset[i]
        refs = item["source_waves"].double().numpy()  # (2, T)
        mix = item["mix_wave"].double().numpy()  # (T,)
        ests = separate(mix, cfg.method, cfg)  # (2, T)
        energies = np.concatenate([(refs ** 2).sum(1), (ests ** 2).sum(1)])
        if (energies < SILENCE_ENERGY).any():
            n_skipped += 1
            log.write(pair=i, sdr="", sir="", sar="", sdr_mix="", skipped="silent reference or estimate")
            progress.update()
            continue
        sdr, sir, sar = best_permutation_metrics(refs, ests, cfg.metrics_backend)
        sdr_mix = bss_eval(refs, np.stack([mix, mix]), cfg.metrics_backend)[0]
        sdrs.append(sdr.mean())
        sirs.append(sir.mean())
        sars.append(sar.mean())
        sdr_mixes.append(sdr_mix.mean())
        log.write(pair=i, sdr=sdrs[-1], sir=sirs[-1], sar=sars[-1], sdr_mix=sdr_mixes[-1], skipped="")
        progress.update(sdr=float(np.mean(sdrs)))
    log.close()
    if not sdrs:
        raise ValueError(f"{manifest_dir}: all {n_total} pairs were skipped (silent reference or estimate)")
    metrics = {"sdr": float(np.mean(sdrs)), "sir": float(np.mean(sirs)), "sar": float(np.mean(sars)),
               "sdr_mix": float(np.mean(sdr_mixes)), "n_pairs": len(sdrs), "n_skipped": n_skipped}
    manifest_csv = manifest_dir / "manifest.csv"
    write_metrics(out_dir, metrics, cfg=cfg, scale=cfg.scale, seed=cfg.seed,
                  manifest=manifest_csv if manifest_csv.is_file() else None,
                  wall_s=time.perf_counter() - t0, method=cfg.method)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)


def main(args: argparse.Namespace) -> int:
    return job_main(args, Config, run)
