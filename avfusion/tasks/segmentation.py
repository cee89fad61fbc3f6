"""Audio-visual segmentation (spec 4.5): encoder + AVSegmDecoder, S4-style binary or AVSS semantic.

    avfusion segmentation --config avfusion/tasks/examples/segmentation.yaml \
        --set init.checkpoint=runs/pretrain/x --out runs/segmentation/x

- `num_classes: 1` = binary (S4, MS3, tuxav): BCE on one logit map; `num_classes: 71` = AVSS:
  cross-entropy over classes (background = 0), the dataset returns class indices. A manifest that says
  what its masks are (report.json details.mask_classes, AVSBench parser) must match `num_classes`:
  a binary head on the 71-class AVSS manifest is refused, naming the key.
- encoder fine-tuned with layer decay 0.75 (or frozen: `freeze_encoder: true`).
- evaluation (deterministic frames) in both conventions (avfusion.metrics.segmentation):
  DeepAVFusion `miou` (background included), `miou_nobg`, `fscore`; AVSBench `avsbench_miou`,
  `avsbench_fscore`; `n_frames` (scored by DeepAVFusion), `n_skipped_empty` (background-only frames).
  Also the two trivial predictors' scores as floors: every pixel foreground (`allfg_*`; AVSS: the first
  foreground class) and every pixel background (`allbg_*`). Percentages.
- examples.npz: a few images, GT masks and predicted probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..engine import train
from .common import add_job_arguments, eval_dataset, job_main, media_options
from .dense_prediction import (DensePredictionConfig, denormalize, eval_loader, finish_run, run_encoder,
                               stack_examples, start_dense_job)


# `recipe` (a layer of defaults under the config files; spec 4.5): `ours` = the dataclass defaults (the
# smoke/tiny scales); `code` = the official README S4 run (AdamW, blr 2e-4, layer decay 0.75, 100 epochs,
# warmup 20, effective batch 512 = 16 x 8 x 4, evaluation on AVSBench 'val' as eval_avsegm.py does);
# `paper` = appendix A.2 (Adam, lr 1e-4, batch 128, 20 epochs; the 'test' split the paper names).
RECIPES = {
    "ours": {},
    "code": {"optim": {"optimizer": "adamw", "blr": 2e-4, "betas": [0.9, 0.999], "weight_decay": 0.05,
                       "layer_decay": 0.75, "epochs": 100, "warmup_epochs": 20, "effective_batch": 512},
             "data": {"eval_split": "val"}},
    "paper": {"optim": {"optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "layer_decay": None, "epochs": 20, "warmup_epochs": 0,
                        "effective_batch": 128},
              "data": {"eval_split": "test"}},
}


@dataclass
class Config(DensePredictionConfig):
    recipe: str = "ours"                 # ours | code | paper (RECIPES)
    num_classes: int = 1                 # 1 = binary (BCE); AVSS: 71 (CE)
    decoder_width: Optional[int] = None  # AVSegmDecoder width (None = encoder width)
    decoder_min_width: int = 128         # official 128; small for smoke/tiny
    oversample: int = 1                  # the training set repeated per epoch; official S4 x10, MS3 x100, AVSS x5

    def validate(self) -> None:
        if self.oversample < 1:
            raise ConfigError(f"config key 'oversample': {self.oversample} must be >= 1")
        if self.num_classes == 2 or self.num_classes < 1:
            raise ConfigError(f"config key 'num_classes': {self.num_classes}; use 1 for binary "
                              "segmentation or the number of classes (> 2, background included)")
        super().validate()
        check_head(self)


class AVSegmenter(nn.Module):
    """Encoder + AVSegmDecoder: `model(image (B,3,S,S), audio (B,1,128,192)) -> logits (B,C,S,S)`."""

    def __init__(self, encoder: nn.Module, num_classes: int, width: int | None, min_width: int, frozen: bool):
        super().__init__()
        from ..models.segmentation_decoder import AVSegmDecoder

        self.encoder, self.frozen = encoder, frozen
        self.decoder = AVSegmDecoder(encoder.embed_dim, num_classes, width=width, min_width=min_width)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        out = run_encoder(self.encoder, self.frozen, image, audio, return_embs=True)
        return self.decoder(out.layers, tuple(self.encoder.image_grid), tuple(image.shape[-2:]))


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE for one output map (mask float (B,S,S)), cross-entropy otherwise (mask long (B,S,S))."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], mask.float())
    return F.cross_entropy(logits, mask.long())


def summarize(deepavfusion, avsbench, prefix: str = "") -> dict:
    """Both evaluators -> the metric keys of docs/interfaces.md (percent)."""
    ours, bench = deepavfusion.summary(), avsbench.summary()
    return {f"{prefix}miou": 100 * ours["miou"], f"{prefix}miou_nobg": 100 * ours["miou_nobg"],
            f"{prefix}fscore": 100 * ours["fscore"], f"{prefix}avsbench_miou": 100 * bench["miou"],
            f"{prefix}avsbench_fscore": 100 * bench["fscore"]}


def trivial_predictions(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The floors of every segmentation table, as logits shaped like the model's (B, C, S, S):
    `allfg_` every pixel foreground (AVSS: the first foreground class), `allbg_` every pixel background."""
    all_fg, all_bg = torch.zeros_like(logits), torch.zeros_like(logits)  # (B, C, S, S)
    if logits.shape[1] == 1:  # binary: sigmoid(+-10) decides every threshold
        all_fg += 10.0
        all_bg -= 10.0
    else:
        all_fg[:, 1] = 10.0
        all_bg[:, 0] = 10.0
    return {"allfg_": all_fg, "allbg_": all_bg}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int, n_examples: int) -> tuple[dict, dict]:
    from ..metrics.segmentation import AVSBenchSegmentationEvaluator, DeepAVFusionSegmentationEvaluator

    model.eval()
    evaluators = {prefix: (DeepAVFusionSegmentationEvaluator(num_classes), AVSBenchSegmentationEvaluator(num_classes))
                  for prefix in ("", "allfg_", "allbg_")}
    examples: dict[str, list] = {"image": [], "mask": [], "pred": []}
    for batch in loader:
        logits = model(batch["image"].to(device), batch["audio"].to(device)).float().cpu()  # (B, C, S, S)
        for prefix, prediction in (("", logits), *trivial_predictions(logits).items()):
            for evaluator in evaluators[prefix]:
                evaluator.update(prediction, batch["mask"])
        if len(examples["image"]) < n_examples:
            prob = torch.sigmoid(logits[:, 0]) if num_classes == 1 else logits.argmax(1).float()
            examples["image"].append(torch.from_numpy(denormalize(batch["image"])))
            examples["mask"].append(batch["mask"].float())
            examples["pred"].append(prob)
    metrics = {}
    for prefix, (ours, bench) in evaluators.items():
        metrics.update(summarize(ours, bench, prefix=prefix))
    ours = evaluators[""][0]
    metrics.update(n_frames=ours.n_frames, n_skipped_empty=ours.n_skipped_empty, num_classes=num_classes)
    return metrics, stack_examples(examples, n_examples)


def check_head(cfg: Config) -> None:
    """The head must match the manifest's masks: report.json details.mask_classes (written by the AVSBench
    parser: 71 for AVSS, 1 = binary for S4 / MS3) against `num_classes`; manifests without it (tuxav,
    older ones) are binary or class maps by `num_classes` alone."""
    import json

    report = Path(cfg.data.manifest) / "report.json"
    details = json.loads(report.read_text()).get("details", {}) if report.is_file() else {}
    mask_classes = details.get("mask_classes")
    if mask_classes is None or int(mask_classes) == cfg.num_classes:
        return
    if cfg.num_classes == 1:
        raise ConfigError(f"config key 'num_classes': 1 is a binary head, but the manifest {cfg.data.manifest} "
                          f"has {mask_classes}-class masks (report.json details.mask_classes, e.g. AVSBench-AVSS): "
                          f"set num_classes: {mask_classes} (multi-class mIoU) instead")
    raise ConfigError(f"config key 'num_classes': {cfg.num_classes}, but the manifest {cfg.data.manifest} has "
                      f"{'binary' if int(mask_classes) == 1 else str(mask_classes) + '-class'} masks "
                      f"(report.json details.mask_classes = {mask_classes}): set num_classes: {mask_classes}")


def run(cfg: Config, out_dir: Path) -> dict:
    from ..data.datasets import SegmentationDataset

    out_dir = Path(out_dir)
    t0, device, encoder = start_dense_job(cfg)
    model = AVSegmenter(encoder, cfg.num_classes, cfg.decoder_width, cfg.decoder_min_width, cfg.freeze_encoder)
    dataset_classes = 2 if cfg.num_classes == 1 else cfg.num_classes
    media = media_options(cfg.data)
    train_set = SegmentationDataset(cfg.data.manifest, cfg.data.train_split, True, cfg.data.image_size, dataset_classes,
                                    **media)
    if cfg.oversample > 1:  # official FolderVideoDataset oversampling: every clip k times per epoch
        train_set = torch.utils.data.ConcatDataset([train_set] * cfg.oversample)
    eval_set = eval_dataset(lambda split: SegmentationDataset(cfg.data.manifest, split, False, cfg.data.image_size,
                                                              dataset_classes, **media), cfg.data.eval_split)

    def loss_fn(net, batch):
        return segmentation_loss(net(batch["image"], batch["audio"]), batch["mask"]), {}

    result = train(model, loss_fn, train_set, cfg.optim, out_dir, seed=cfg.seed, device=str(device),
                   workers=cfg.data.workers, job_config=cfg, desc="segmentation")
    loader = eval_loader(eval_set, cfg.data.eval_batch_size, cfg.data.workers)
    metrics, examples = evaluate(result.model, loader, device, cfg.num_classes, cfg.n_examples)
    return finish_run(out_dir, cfg, result, metrics, examples, t0)


add_arguments = add_job_arguments


def main(args):
    return job_main(args, Config, run, RECIPES)
