"""AV-MAE pretraining (or image-/audio-only MAE) with the kNN probe curve (spec 3, Figure 3).

    avfusion data make-tuxav --scale smoke --out data/tuxav-smoke
    avfusion pretrain --config avfusion/tasks/examples/pretrain.yaml --set optim.epochs=2 --out runs/pretrain/x

- model: `{preset: NAME, ...overrides}` -> `avfusion.models.registry.build_pretrain_model`; any encoder
  variant, the unimodal MAE presets, and the baselines' pretraining models.
- init: `{image: PATH, audio: PATH}` loads unimodal weights into the encoder's branches (spec 2.1):
  a MAE / AudioMAE file, or one of our own UnimodalMAE run folders (its checkpoint_latest.pth).
- recipe `code` (default): AdamW (0.9, 0.95), blr 1.5e-4, wd 0.05, warmup + cosine, unimodal lr ramp
  (spec 3.2); recipe `paper`: Adam, no ramp (spec 8 items 12, 17). Scale files set epochs and sizes.
- kNN probe (spec 3.3) on `knn.split` after epoch 0, every `knn.every` epochs and the last one
  (and once before training with `knn.at_start`), rows in `knn.csv`:
  epoch,step,acc_audio,acc_image,acc_fusion,acc_all (epoch -1 = before training).
- metrics.json: loss, loss_image, loss_audio (last epoch mean), knn_acc_* (last probe).
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import distributed as dist_utils
from ..checkpoints import resolve_checkpoint
from ..engine import OptimConfig, train
from ..progress import CSVLog
from .common import DataConfig, JobConfig, add_job_arguments, job_main, media_options, start_job, write_job_metrics

KNN_COLUMNS = ["epoch", "step", "acc_audio", "acc_image", "acc_fusion", "acc_all"]
KNN_COLUMNS_MULTILABEL = ["epoch", "step", *(f"{k}_{m}" for k in ("map", "auc")
                                                for m in ("audio", "image", "fusion", "all"))]

RECIPES = {
    # official configs/deepavfusion.yaml + train.py (spec 3.2)
    "code": {"optim": {"optimizer": "adamw", "blr": 1.5e-4, "betas": [0.9, 0.95], "weight_decay": 0.05,
                       "unimodal_lr_ramp": True}},
    # paper text: "Adam", no mention of the unimodal ramp (spec 8 items 12, 17)
    "paper": {"optim": {"optimizer": "adam", "blr": 1.5e-4, "betas": [0.9, 0.95], "weight_decay": 0.05,
                        "unimodal_lr_ramp": False}},
}


@dataclass
class PretrainDataConfig(DataConfig):
    split: str = "train"


@dataclass
class KnnConfig:
    enabled: bool = True
    manifest: str = ""            # '' = data.manifest
    split: str = "test"
    every: int = 10               # also after epoch 0 and the last epoch (official eval_freq)
    at_start: bool = False        # probe the initial model too (Figure 3's step 0)
    batch_size: int = 32
    multilabel: bool = False


@dataclass
class InitConfig:
    """Pretraining's `init:` (unlike the downstream tasks' `init.checkpoint`): unimodal branch weights."""
    image: str = ""               # unimodal checkpoint for encoder.image ('' = keep the init)
    audio: str = ""


@dataclass
class Config(JobConfig):
    recipe: str = "code"
    init: InitConfig = field(default_factory=InitConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(unimodal_lr_ramp=True))
    knn: KnnConfig = field(default_factory=KnnConfig)
    # the unimodal lr ramp (optim.unimodal_lr_ramp) applies to the branches loaded from init.image /
    # init.audio only; true = also to a branch without init (the official code ramps whenever
    # `pretrained is not None`, '' included: spec 3.2)
    ramp_random_branches: bool = False
    # write init.image / init.audio, loaded into the model, as this run's checkpoint (no training): the
    # run folder of published weights (paper scale: Table 3's MAE / AudioMAE rows start from the public
    # MAE / AudioMAE files, spec 2.1), read by the downstream tasks like any pretraining run
    import_only: bool = False

    def validate(self) -> None:
        super().validate()
        if self.import_only and not (self.init.image or self.init.audio):
            from ..config import ConfigError

            raise ConfigError("config key 'import_only': true needs init.image or init.audio (the weights to import)")


def load_unimodal_init(model: torch.nn.Module, init: InitConfig) -> None:
    """init.image / init.audio -> encoder.image / encoder.audio (MAE loading rule, spec 2.1)."""
    from ..models.encoder import load_branch_checkpoint

    for modality in ("image", "audio"):
        path = getattr(init, modality)
        if not path:
            continue
        branch = getattr(model.encoder, modality, None)
        if branch is None:
            raise ValueError(f"config key 'init.{modality}': the model's encoder has no {modality} branch")
        checkpoint = str(resolve_checkpoint(path, key=f"init.{modality}"))
        custom = getattr(model.encoder, "load_unimodal", None)  # encoders whose branch is not one plain ViT (CAV-MAE)
        if custom is not None:
            custom(checkpoint, modality)
        else:
            load_branch_checkpoint(branch, checkpoint, modality)
        print(f"init.{modality}: loaded {path}")


def _knn_epochs(cfg: Config):
    last = cfg.optim.epochs - 1
    return lambda epoch: epoch == 0 or epoch == last or epoch % cfg.knn.every == 0


def run(cfg: Config, out_dir: Path) -> dict:
    from ..data.datasets import AVClipDataset
    from ..metrics.knn import knn_probe
    from ..models.registry import build_pretrain_model

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    device = start_job(cfg)
    model = build_pretrain_model(dict(cfg.model))          # bad model keys fail here, before any data
    load_unimodal_init(model, cfg.init)
    if cfg.import_only:
        return import_run(model, cfg, out_dir, t0)
    ramp = ramp_prefixes(cfg)
    media = media_options(cfg.data)
    train_set = AVClipDataset(cfg.data.manifest, cfg.data.split, train=True, image_size=cfg.data.image_size, **media)
    knn_set = None
    if cfg.knn.enabled:
        knn_set = AVClipDataset(cfg.knn.manifest or cfg.data.manifest, cfg.knn.split, train=False,
                                image_size=cfg.data.image_size, multilabel=cfg.knn.multilabel,
                                **(dict(media, media=None) if cfg.knn.manifest else media))  # another folder: auto
    knn_path = out_dir / "knn.csv"
    columns = KNN_COLUMNS_MULTILABEL if cfg.knn.multilabel else KNN_COLUMNS

    def loss_fn(net, batch):
        seeded = {"sample_seed": batch["sample_seed"]} if "sample_seed" in batch else {}  # optim.sample_seeded_rng
        out = net(batch["image"], batch["audio"], **seeded)
        return out["loss"], {k: v for k, v in out.items() if k.startswith("loss_") and v.ndim == 0}

    def eval_fn(net, epoch, step):
        stats = knn_probe(net.encoder, knn_set, cfg.knn.batch_size, device, cfg.data.workers)
        if dist_utils.is_main_process():
            log = CSVLog(knn_path, columns)
            log.write(epoch=epoch, step=step, **{c: f"{stats[c]:.4f}" if c in stats else "" for c in columns[2:]})
            log.close()
            print(f"knn probe epoch {epoch} step {step}: " + " ".join(f"{k}={v:.2f}" for k, v in stats.items()))
        return stats

    result = train(model, loss_fn, train_set, cfg.optim, out_dir, seed=cfg.seed, device=str(device),
                   workers=cfg.data.workers, job_config=cfg, desc="pretrain",
                   eval_fn=eval_fn if cfg.knn.enabled else None, eval_epochs=_knn_epochs(cfg),
                   eval_at_start=cfg.knn.at_start, extra_logs=[(knn_path, "epoch")], ramp_prefixes=ramp)
    metrics = {k: v for k, v in result.history[-1].items() if k == "loss" or k.startswith("loss_")}
    if cfg.knn.enabled:
        rows = _read_rows(knn_path)
        if rows:
            metrics.update({f"knn_{c}": float(rows[-1][c]) for c in columns[2:] if rows[-1][c] != ""})
    metrics.update(epochs=result.epochs_done, steps=result.steps)
    return write_job_metrics(out_dir, cfg, metrics, t0, stopped_early=result.stopped_early)


def ramp_prefixes(cfg: Config) -> tuple[str, ...]:
    """Parameter prefixes of the unimodal lr ramp: the branches with init weights (all with ramp_random_branches)."""
    return tuple(f"encoder.{m}." for m in ("image", "audio") if cfg.ramp_random_branches or getattr(cfg.init, m))


def import_run(model: torch.nn.Module, cfg: Config, out_dir: Path, t0: float) -> dict:
    """`import_only`: the model with its init weights as checkpoints/checkpoint_latest.pth (epoch 0, no
    optimizer state) and metrics.json {imported: 1, steps: 0}; rank 0 writes, the others wait."""
    from ..engine import checkpoint_path
    from ..io import atomic_torch_save
    from ..provenance import write_metrics

    if dist_utils.is_main_process():
        atomic_torch_save({"state_dict": model.state_dict(), "epoch": 0, "step": 0, "imported_from":
                           {"image": cfg.init.image, "audio": cfg.init.audio}}, checkpoint_path(out_dir))
        metrics = {"imported": 1, "epochs": 0, "steps": 0}
        write_metrics(out_dir, metrics, cfg=cfg, scale=cfg.scale, seed=cfg.seed, wall_s=time.perf_counter() - t0,
                      imported_from={"image": cfg.init.image, "audio": cfg.init.audio})
        print(f"import_only: wrote {checkpoint_path(out_dir)} from init {cfg.init.image or cfg.init.audio}")
    dist_utils.barrier()
    return {"imported": 1, "epochs": 0, "steps": 0}


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


add_arguments = add_job_arguments


def main(args):
    return job_main(args, Config, run, RECIPES)
