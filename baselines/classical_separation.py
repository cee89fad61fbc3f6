"""Blind classical separation baselines of Table 1 (NMF, RPCA) over fixed mixture pairs.

    avfusion classical-separation --set method=rpca --set data.manifest=data/tuxav-smoke --out runs/separation/rpca

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from avfusion.config import ConfigError
from avfusion.metrics.separation import bss_eval, silent_mixtures
from avfusion.progress import CSVLog, Progress
from avfusion.provenance import write_metrics
from avfusion.tasks.common import add_job_arguments, job_main
from baselines.nmf import NMFConfig, nmf_masks
from baselines.rpca import RPCAConfig, rpca_masks

LOG_FIELDS = ["pair", "sdr", "sir", "sar", "sdr_mix", "skipped"]


@dataclass
class STFTConfig:
    n_fft: int = 800
    hop: int = 250


@dataclass
class DataConfig:
    manifest: str = ""          # manifest folder holding manifest.csv and pairs.csv
    eval_split: str = "test"    # the pairs.csv split that is scored (as the separation task)
    image_size: int = 32        # frames are loaded by MixtureDataset but not used by these methods
    max_pairs: int = 0          # 0 = every pair


@dataclass
class Config:
    method: Literal["nmf", "rpca"] = "nmf"
    seed: int = 0
    scale: str = "tiny"
    metrics_backend: Literal["auto", "fast", "mir_eval"] = "auto"  # auto: the project's default backend
    threads: int = 1   # BLAS/OpenMP/torch threads; the matrices are small, more threads mostly spin
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


def _backend(name: str) -> str | None:
    return None if name == "auto" else name


def best_permutation_metrics(refs: np.ndarray, ests: np.ndarray, backend: str = "auto"):
    """(sdr, sir, sar) each (2,) of two estimates against two sources under the assignment with the
    higher mean SIR (mir_eval's `compute_permutation=True` rule); refs, ests (2, T)."""
    both = np.stack([ests, ests[::-1]])  # (2 orders, 2, T)
    sdr, sir, sar = bss_eval(np.stack([refs, refs]), both, _backend(backend))  # each (2 orders, 2)
    best = int(np.argmax(sir.mean(1)))
    return sdr[best], sir[best], sar[best]


def run(cfg: Config, out_dir: Path) -> dict:
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(cfg.threads):
            return _run(cfg, out_dir)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Config, out_dir: Path) -> dict:
    from avfusion.data.datasets import MixtureDataset

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    manifest_dir = Path(cfg.data.manifest)
    dataset = MixtureDataset(manifest_dir, cfg.data.eval_split, train=False, image_size=cfg.data.image_size)
    n_total = len(dataset) if cfg.data.max_pairs <= 0 else min(cfg.data.max_pairs, len(dataset))
    if n_total == 0:
        raise ValueError(f"{manifest_dir}: no separation pairs in split {cfg.data.eval_split!r}")
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
        if silent_mixtures(refs[None], ests[None])[0]:
            n_skipped += 1
            log.write(pair=i, sdr="", sir="", sar="", sdr_mix="", skipped="silent reference or estimate")
            progress.update()
            continue
        sdr, sir, sar = best_permutation_metrics(refs, ests, cfg.metrics_backend)
        sdr_mix = bss_eval(refs[None], np.stack([mix, mix])[None], _backend(cfg.metrics_backend))[0][0]
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
