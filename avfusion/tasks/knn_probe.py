"""`avfusion knn-probe`: the leave-one-out 1-NN probe (avfusion/metrics/knn.py) of a checkpoint.

    avfusion knn-probe --config avfusion/tasks/examples/knn_probe.yaml \
        --set init.checkpoint=runs/pretrain/x --out runs/knn-probe/x

- `model:` the model config the checkpoint was trained with; `init.checkpoint`: a pretraining run
  folder or checkpoint file ('' probes the random init).
- metrics.json: knn_acc_audio, knn_acc_image, knn_acc_fusion, knn_acc_all (or knn_map_*/knn_auc_*
  with `data.multilabel`), n_clips.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics.knn import MODALITIES, extract_features, knn_loo, knn_probe  # noqa: F401  (the probe's API)
from ..models.registry import build_encoder
from .common import DataConfig, JobConfig, add_job_arguments, job_main, media_options, start_job, write_job_metrics


@dataclass
class ProbeDataConfig(DataConfig):
    split: str = "test"
    batch_size: int = 32
    multilabel: bool = False


@dataclass
class Config(JobConfig):
    """Probe a checkpoint (`init.checkpoint`) with the model config it was trained with."""
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)


def run(cfg: Config, out_dir: Path) -> dict:
    from ..data.datasets import AVClipDataset

    t0 = time.perf_counter()
    device = start_job(cfg)
    encoder = build_encoder(cfg.model, cfg.init.checkpoint, cfg.data.image_size, freeze=False).to(device)
    dataset = AVClipDataset(cfg.data.manifest, cfg.data.split, train=False, image_size=cfg.data.image_size,
                            multilabel=cfg.data.multilabel, **media_options(cfg.data))
    stats = knn_probe(encoder, dataset, cfg.data.batch_size, device, cfg.data.workers)
    metrics = {f"knn_{k}": v for k, v in stats.items()}
    metrics["n_clips"] = len(dataset)
    return write_job_metrics(Path(out_dir), cfg, metrics, t0)


add_arguments = add_job_arguments


def main(args):
    return job_main(args, Config, run)
