"""The job contract every task shares: the config header, the CLI, start/finish and metrics.json.

Every task module defines a dataclass `Config(JobConfig)` and `run(cfg, out_dir) -> dict` (flat
metrics); its CLI is then just:

    add_arguments = add_job_arguments
    def main(args): return job_main(args, Config, run)

    avfusion <task> --config FILE [--config FILE2] [--set key=value ...] --out DIR [--fresh]

and `run` reads like: `device = start_job(cfg)`, build the encoder with one call,
`avfusion.models.registry.build_encoder(cfg.model, cfg.init.checkpoint, cfg.data.image_size, freeze)`
(beside the presets' table), `engine.train`, evaluate, `write_job_metrics(out_dir, cfg, metrics, t0)`
(metrics.json names the task module, its config and the run it came from). Tasks import from here,
never from a sibling task (the dense-prediction tasks also share `dense_prediction.py`).

The run folder is held by one process at a time (`avfusion.runlock`); a folder holding a
checkpoint is resumed only with the config it was made with (`avfusion.engine`), `--fresh` moves
the old run aside to `<out>.replaced-<time>` and starts again. A job that fails before writing
anything leaves no empty run folder behind.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch.utils.data import ConcatDataset, DataLoader

from .. import distributed as dist_utils
from ..config import ConfigError, from_dict, load_yaml, merge, parse_overrides
from ..engine import resolve_device, seed_everything

__all__ = ["JobConfig", "InitConfig", "DataConfig", "TrainEvalDataConfig", "ClassificationDataConfig",
           "validate_model_section", "start_job", "write_job_metrics", "eval_dataset", "clip_dataset", "predict",
           "add_job_arguments", "build_job_config", "load_job_config", "job_main"]


# ----------------------------------------------------------------------------- configs
@dataclass
class InitConfig:
    checkpoint: str = ""          # pretraining run folder or checkpoint file ('' = random encoder)


@dataclass
class JobConfig:
    """The header of every job config. `model` is required: `{preset: NAME, ...overrides}` or a
    full model dict (avfusion.models.registry); an empty one is refused at load time."""
    seed: int = 0
    scale: str = "smoke"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: dict[str, Any] = field(default_factory=dict)
    init: InitConfig = field(default_factory=InitConfig)

    def validate(self) -> None:
        validate_model_section(self.model)


@dataclass
class DataConfig:
    """Every job that reads a manifest."""
    manifest: str = ""            # folder with manifest.csv (+ classes.txt, pairs.csv, masks as the task needs)
    image_size: int = 224         # must match the encoder's image input (registry.build_encoder checks)
    workers: int = 0
    cache_decoded: bool = False   # keep decoded clips (audio, frame, mel power) in memory: no epoch decodes
                                  # again (tiny scale; data/datasets.py "Decoded-clip memo")
    media: Literal["auto", "raw", "prepared"] = "auto"   # auto: the shards of `avfusion data cache` when the
                                  # manifest folder has them (README "Data loading speed"), else the raw files
    frame_rule: Literal["nearest", "keyframe"] = "nearest"   # raw video: the frame nearest t, or the official
                                  # rule (the keyframe at or before t; 3-5x cheaper to decode)
    decode_short_side: int = 0    # raw video: the decoder scales sampled frames to this short side (0 = full size)
    train_image_dtype: Literal["float32", "uint8"] = "float32"   # uint8: training items carry the uint8 crop,
                                  # normalised by the engine after the batch reached the device (the same numbers;
                                  # 1/4 of the image bytes through the DataLoader; not for segmentation /
                                  # localization). Evaluation items are always float32

    def validate(self) -> None:
        if self.decode_short_side and self.decode_short_side < self.image_size:
            raise ConfigError(f"config key 'data.decode_short_side': {self.decode_short_side} is below "
                              f"data.image_size {self.image_size} (frames would be upscaled); use 0 (full size) "
                              f"or at least {self.image_size}")
        if self.decode_short_side < 0:
            raise ConfigError(f"config key 'data.decode_short_side': {self.decode_short_side} < 0")


def media_options(data: DataConfig) -> dict:
    """The Dataset keyword arguments of `data.media`, `data.frame_rule`, `data.decode_short_side`,
    `data.train_image_dtype`."""
    return {"media": None if data.media == "auto" else data.media, "frame_rule": data.frame_rule,
            "decode_short_side": data.decode_short_side or None, "train_image_dtype": data.train_image_dtype}


@dataclass
class TrainEvalDataConfig(DataConfig):
    """A job that trains on one split and evaluates on another."""
    train_split: str = "train"    # 'a+b' joins splits
    eval_split: str = "test"      # several splits joined by '+', e.g. "val+test"
    eval_batch_size: int = 16


@dataclass
class ClassificationDataConfig(TrainEvalDataConfig):
    """Clip classification (linear probe, fine-tuning): single- or multi-label."""
    eval_batch_size: int = 64
    multilabel: bool = False


def validate_model_section(model: dict) -> None:
    """Resolve `model:` at config time so a bad preset, key or type fails first, naming `model.<key>`."""
    from ..models.registry import resolve

    if not model:
        raise ConfigError("config key 'model': empty; set model.preset (e.g. deepavfusion-tiny) or a full model dict")
    resolve(dict(model))


# ----------------------------------------------------------------------------- start / finish
def start_job(cfg: JobConfig) -> torch.device:
    """Seed, pick the device, join the process group (a no-op unless WORLD_SIZE > 1)."""
    from ..data.datasets import DECODED

    seed_everything(cfg.seed)
    data = getattr(cfg, "data", None)
    DECODED.enable(bool(getattr(data, "cache_decoded", False)))
    device = resolve_device(cfg.device)
    dist_utils.init_distributed(device.type)
    return device


def write_job_metrics(out_dir: Path, cfg: JobConfig, metrics: dict, t0: float, **provenance) -> dict:
    """metrics.json (main process only) with the config, scale, seed, manifest hash and wall time since `t0`."""
    from ..provenance import write_metrics

    if dist_utils.is_main_process():
        data = getattr(cfg, "data", None)
        if data is not None:
            provenance["manifest"] = Path(data.manifest) / "manifest.csv"
        write_metrics(out_dir, metrics, cfg=cfg, scale=cfg.scale, seed=cfg.seed,
                      wall_s=time.perf_counter() - t0, **provenance)
    return metrics


# ----------------------------------------------------------------------------- data
def eval_dataset(make: Callable[[str], Any], eval_split: str):
    """`make(split)` for each '+'-joined split of `eval_split`, concatenated in that order."""
    splits = [s for s in eval_split.split("+") if s]
    if not splits:
        raise ConfigError(f"config key 'data.eval_split': no split in {eval_split!r}")
    sets = [make(split) for split in splits]
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def clip_dataset(data: ClassificationDataConfig, splits: str, train: bool):
    """AVClipDataset of one split, or of several joined by '+' ('val+test'), with `.classes`, `.rows`."""
    from ..data.datasets import AVClipDataset

    parts = [AVClipDataset(data.manifest, split, train=train, image_size=data.image_size,
                           multilabel=data.multilabel, **media_options(data)) for split in splits.split("+")]
    if len(parts) == 1:
        return parts[0]
    merged = ConcatDataset(parts)
    merged.classes, merged.split = parts[0].classes, splits
    merged.rows = [row for part in parts for row in part.rows]
    merged.label_index, merged.label_multihot = parts[0].label_index, parts[0].label_multihot
    return merged


@torch.no_grad()
def predict(forward, loader: DataLoader, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run `forward(batch) -> {head: logits (B, C)}` over `loader` -> ({head: (N, C)}, labels) on CPU."""
    logits: dict[str, list] = {}
    labels = []
    for batch in loader:
        batch = {k: ({h: t.to(device) for h, t in v.items()} if isinstance(v, dict) else v.to(device))
                 for k, v in batch.items()}
        for head, value in forward(batch).items():
            logits.setdefault(head, []).append(value.float().cpu())
        labels.append(batch["label"].cpu())
    return {h: torch.cat(v) for h, v in logits.items()}, torch.cat(labels)


# ----------------------------------------------------------------------------- CLI
def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config; several are merged left to right")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one key, e.g. --set optim.epochs=2")
    parser.add_argument("--out", required=True, type=Path, help="run folder (resumes if it holds a checkpoint)")
    parser.add_argument("--fresh", action="store_true",
                        help="start afresh: move an existing run in --out aside to <out>.replaced-<time>")


def build_job_config(config_cls: type, raw: dict, recipes: dict | None = None) -> Any:
    """Build `config_cls` from one merged dict. With `recipes` ({name: nested dict}), the config's
    `recipe` key (else the class default) picks a layer of defaults that sits under `raw`: a recipe
    is config data (e.g. the paper's vs the code's hyperparameters)."""
    if not recipes:
        return from_dict(config_cls, raw)
    name = raw.get("recipe", getattr(config_cls(), "recipe", None))
    if name not in recipes:
        raise ConfigError(f"config key 'recipe': got {name!r}, expected one of {sorted(recipes)}")
    return from_dict(config_cls, merge(recipes[name], raw))


def load_job_config(config_cls: type, files: list, overrides: list, recipes: dict | None = None) -> Any:
    """Build `config_cls` from files + overrides (+ the recipe layer, see build_job_config)."""
    raw: dict = {}
    for path in files or []:
        raw = merge(raw, load_yaml(path))
    return build_job_config(config_cls, merge(raw, parse_overrides(overrides)), recipes)


def job_main(args: argparse.Namespace, config_cls: type, run: Callable[[Any, Path], dict],
             recipes: dict | None = None) -> int:
    """Config -> lock the run folder -> run -> metrics line. Errors propagate to `avfusion.cli`,
    which prints them as one line with an exit code."""
    from ..runlock import LOCK_NAME, RunLock, move_run_aside

    cfg = load_job_config(config_cls, args.config, args.overrides, recipes)
    out = Path(args.out)
    created = not out.exists()
    lock = RunLock(out) if os.environ.get("RANK", "0") == "0" else None  # DDP: rank 0 owns the folder
    if lock is not None:
        lock.acquire()
    else:
        out.mkdir(parents=True, exist_ok=True)
    try:
        if getattr(args, "fresh", False) and lock is not None:
            stale = move_run_aside(out, keep=(LOCK_NAME,))
            if stale is not None:
                print(f"--fresh: the old run in {out} moved to {stale}")
        metrics = run(cfg, out)
    finally:
        if lock is not None:
            lock.release()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a job that failed at start leaves no empty run folder
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0
