"""End-to-end fine-tuning for audio-visual classification (spec 4.2).

    avfusion data make-tuxav --scale smoke --out data/tuxav-smoke
    avfusion finetune --config avfusion/tasks/examples/finetune.yaml \
        --set init.checkpoint=runs/pretrain/x --out runs/finetune/x
    (the workflow writes the job's config file from the scale's `tasks.finetune` section;
    `--set dense_eval.enabled=false` skips the final 10-clip evaluation)

- encoder from `model: {preset, ...}` (+ `drop_path`, applied uniformly to every block), `init.checkpoint`
  loads `encoder.*` strictly ('' = random init); three linear heads (no BN), logits averaged ("all").
- recipe `code` (default, configs/finetune.yaml): AdamW (0.9, 0.999), blr 3e-4, wd 0.05, layer decay
  0.75, warmup 20 / 100 epochs, mixup alpha 1 (per-sample lambda, batch flipped, image and log-mel),
  label smoothing 0.1, drop_path 0.2, head bias = log((f+1e-3)/(1-f+1e-3)), loss on the averaged
  logits over classes seen in training, divided by their frequency f_c and averaged (joint_loss).
  recipe `paper` (Appendix A.1): Adam, lr 1e-4, batch 128, 50 epochs, none of the extras.
- evaluation: one deterministic clip per video on `data.eval_split` (the official periodic eval),
  optionally every `eval_every` epochs into `eval.csv`; then, after training, the official final
  "dense" evaluation (`dense_eval`, avfusion/data/dense_eval.py): n_clips = 10 windows of 3 s spread over
  span_s = 10 s of each video, logits averaged over the clips per head (as the official), on by default.
  On 3 s clips (the tuxav benchmark) all windows coincide: one decode and one forward per video, and
  the dense metrics equal the single-clip ones (without the gain quirk).
  `dense_eval.gain_db: 2` reproduces the official test-time RandomVol(+-2 dB) quirk (off by default).
  The linear probe has no dense evaluation (official eval_linprobe.py: single clip, spec 4.1).
- metrics.json: acc_all, acc_image, acc_audio, acc_fusion (or map_*/auc_* for multi-label) of the
  single-clip eval, and the same keys prefixed `dense_` (the paper's Table 3 numbers), plus
  dense_n_clips, dense_span_s, dense_windows_forwarded, dense_n_short_span (videos shorter than
  span_s), dense_n_short_clip (videos shorter than one clip: n copies of the padded window).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import distributed as dist_utils
from ..config import ConfigError, merge
from ..engine import OptimConfig, train
from ..metrics.classification import chance_accuracy, head_metrics
from ..mixup import AVMixup, smooth_targets
from ..models.classifier import HEAD_NAMES, AVClassifier, check_heads
from ..models.registry import build_encoder
from ..progress import CSVLog
from .common import (ClassificationDataConfig, JobConfig, add_job_arguments, clip_dataset,
                     eval_dataset, job_main, media_options, predict, start_job, validate_model_section,
                     write_job_metrics)

RECIPES = {
    "code": {"optim": {"optimizer": "adamw", "blr": 3e-4, "betas": [0.9, 0.999], "weight_decay": 0.05,
                       "layer_decay": 0.75, "epochs": 100, "warmup_epochs": 20, "batch_size": 32},
             "mixup": 1.0, "label_smoothing": 0.1, "drop_path": 0.2, "head_bias_init": True,
             "class_weighted_loss": True},
    "paper": {"optim": {"optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0,
                        "layer_decay": None, "epochs": 50, "warmup_epochs": 0, "batch_size": 128},
              "mixup": 0.0, "label_smoothing": 0.0, "drop_path": 0.0, "head_bias_init": False,
              "class_weighted_loss": False},
}


@dataclass
class DenseEvalConfig:
    """Final multi-clip evaluation (official DenseVideoDataset): see avfusion/data/dense_eval.py."""
    enabled: bool = True
    n_clips: int = 10           # official dense_n
    span_s: float = 10.0        # official dense_span (seconds)
    gain_db: float = 0.0        # official quirk: 2.0 = RandomVol(+-2 dB) at test time, one gain per video
    batch_size: int = 0         # videos per batch; 0 = max(data.eval_batch_size // 4, 1), as the official

    def validate(self) -> None:
        if self.n_clips < 1:
            raise ConfigError(f"config key 'dense_eval.n_clips': {self.n_clips} must be >= 1")
        if self.span_s < 3.0:
            raise ConfigError(f"config key 'dense_eval.span_s': {self.span_s} must be >= 3 (one clip)")
        if self.gain_db < 0:
            raise ConfigError(f"config key 'dense_eval.gain_db': {self.gain_db} must be >= 0")
        if self.batch_size < 0:
            raise ConfigError(f"config key 'dense_eval.batch_size': {self.batch_size} must be >= 0")


@dataclass
class Config(JobConfig):
    recipe: str = "code"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    heads: list[str] = field(default_factory=lambda: list(HEAD_NAMES))
    mixup: float = 1.0                  # Beta(alpha, alpha); 0 = off
    mixup_prob: float = 1.0
    label_smoothing: float = 0.1
    drop_path: Optional[float] = 0.2    # set into the model dict; null = leave the model's own value
    head_bias_init: bool = True
    class_weighted_loss: bool = True    # official joint_loss: divide by the class frequency f_c
    eval_every: int = 0                 # 0 = evaluate only at the end
    dense_eval: DenseEvalConfig = field(default_factory=DenseEvalConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        blr=3e-4, betas=(0.9, 0.999), layer_decay=0.75))

    def validate(self) -> None:
        check_heads(self.heads)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"config key 'label_smoothing': {self.label_smoothing} must be in [0, 1)")
        validate_model_section(self.model_dict())

    def model_dict(self) -> dict:
        """`model` with `drop_path` set into it (unless drop_path is null)."""
        return merge(dict(self.model), {"drop_path": self.drop_path}) if self.drop_path is not None else dict(self.model)


def class_frequencies(dataset, multilabel: bool) -> torch.Tensor:
    """(C,) fraction of training clips carrying each class (from the manifest rows, no decoding)."""
    if multilabel:
        return torch.stack([dataset.label_multihot(row) for row in dataset.rows]).mean(0)
    index = torch.tensor([dataset.label_index(row) for row in dataset.rows])
    if (index < 0).any():
        raise ValueError(f"finetune: {(index < 0).sum().item()} training clips have no label")
    return F.one_hot(index, len(dataset.classes)).float().mean(0)


def finetune_loss(logits: torch.Tensor, target: torch.Tensor, class_freq: torch.Tensor, multilabel: bool,
                  class_weighted: bool) -> torch.Tensor:
    """Official joint loss: logits (B, C), soft target (B, C); classes with f_c > 0 only."""
    seen = class_freq > 0
    logits, target = logits[:, seen], target[:, seen]                     # (B, C_seen)
    if multilabel:
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (B, C_seen)
    else:
        loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()     # SoftTargetCE
    if class_weighted:
        loss = loss / class_freq[None, seen]                               # (B or 1, C_seen)
    return loss.mean()


def run(cfg: Config, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    device = start_job(cfg)
    encoder = build_encoder(cfg.model_dict(), cfg.init.checkpoint, cfg.data.image_size, freeze=False)
    train_set = clip_dataset(cfg.data, cfg.data.train_split, train=True)
    eval_set = clip_dataset(cfg.data, cfg.data.eval_split, train=False)
    num_classes = len(train_set.classes)
    class_freq = class_frequencies(train_set, cfg.data.multilabel).to(device)
    model = AVClassifier(encoder, num_classes, cfg.heads, freeze_encoder=False, input_norm=False)
    if cfg.head_bias_init:
        model.init_head_bias(class_freq.cpu())
    mixup = AVMixup(cfg.mixup, cfg.mixup_prob, cfg.label_smoothing, num_classes) if cfg.mixup > 0 else None

    def loss_fn(net, batch):
        image, audio, label = batch["image"], batch["audio"], batch["label"]
        if mixup is not None:
            image, audio, target = mixup(image, audio, label)
        else:
            target = smooth_targets(label, num_classes, cfg.label_smoothing)
        logits = net(image, audio)["all"]
        return finetune_loss(logits, target, class_freq, cfg.data.multilabel, cfg.class_weighted_loss), {}

    eval_loader = DataLoader(eval_set, batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.workers)
    eval_path = out_dir / "eval.csv"

    def evaluate(net, with_chance: bool = False) -> dict:
        logits, labels = predict(lambda b: net(b["image"], b["audio"]), eval_loader, device)
        out = head_metrics(logits, labels, cfg.data.multilabel)
        if with_chance and not cfg.data.multilabel:
            out["chance_acc_all"] = chance_accuracy(labels)    # trivial floor: the most frequent class
        return out

    def eval_fn(net, epoch, step):
        stats = evaluate(net)
        if dist_utils.is_main_process():
            log = CSVLog(eval_path, ["epoch", "step", *sorted(stats)])
            log.write(epoch=epoch, step=step, **{k: f"{v:.4f}" for k, v in stats.items()})
            log.close()
        return stats

    every = cfg.eval_every
    result = train(model, loss_fn, train_set, cfg.optim, out_dir, seed=cfg.seed, device=str(device),
                   workers=cfg.data.workers, job_config=cfg, desc="finetune",
                   eval_fn=eval_fn if every > 0 else None, eval_epochs=lambda e: (e + 1) % max(every, 1) == 0,
                   extra_logs=[(eval_path, "epoch")])
    net = result.model.eval()
    metrics = evaluate(net, with_chance=True)
    metrics.update(loss=result.history[-1]["loss"], n_train=len(train_set), n_eval=len(eval_set))
    if cfg.dense_eval.enabled:
        metrics.update(dense_evaluate(net, cfg, device))
    return write_job_metrics(out_dir, cfg, metrics, t0)


def dense_dataset(cfg: Config):
    """DenseClipDataset of `data.eval_split` ('a+b' joins splits; each split its own gain seed)."""
    from ..data.dense_eval import DenseClipDataset

    d, splits = cfg.dense_eval, cfg.data.eval_split.split("+")
    return eval_dataset(lambda split: DenseClipDataset(
        cfg.data.manifest, split, cfg.data.image_size, cfg.data.multilabel, d.n_clips, d.span_s, d.gain_db,
        gain_seed=cfg.seed * 100 + splits.index(split), **media_options(cfg.data)), cfg.data.eval_split)


def dense_evaluate(net, cfg: Config, device) -> dict:
    """The official final evaluation: logits averaged over n_clips windows per video -> `dense_*` metrics."""
    from ..data.dense_eval import predict_dense

    dataset = dense_dataset(cfg)
    videos_per_batch = cfg.dense_eval.batch_size or max(cfg.data.eval_batch_size // 4, 1)
    loader = DataLoader(dataset, batch_size=videos_per_batch, num_workers=cfg.data.workers)
    logits, labels, counts = predict_dense(lambda image, audio: net(image, audio), loader, device)
    out = {f"dense_{k}": v for k, v in head_metrics(logits, labels, cfg.data.multilabel).items()}
    out.update(dense_n_eval=counts["videos"], dense_n_clips=cfg.dense_eval.n_clips,
               dense_span_s=cfg.dense_eval.span_s, dense_gain_db=cfg.dense_eval.gain_db,
               dense_windows_forwarded=counts["windows_forwarded"],
               dense_n_short_span=counts["short_span"], dense_n_short_clip=counts["short_clip"])
    print(f"dense eval: {counts['videos']} videos x {cfg.dense_eval.n_clips} clips, "
          f"{counts['windows_forwarded']} distinct windows forwarded; {counts['short_span']} shorter than "
          f"{cfg.dense_eval.span_s} s, {counts['short_clip']} shorter than one clip (padded window repeated)")
    return out


add_arguments = add_job_arguments


def main(args):
    return job_main(args, Config, run, RECIPES)
