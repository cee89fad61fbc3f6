"""Sound source localization (paper appendix A.2; spec 4.4): cosine map of mean-pooled audio with
each visual token, trained with per-pixel BCE against the consensus map, scored as EZ-VSL does.

    avfusion localization --config avfusion/tasks/examples/localization.yaml \
        --set init.checkpoint=runs/pretrain/x --out runs/localization/x

- encoder fine-tuned with layer decay 0.75 (or frozen); head = CosineLocalizationHead on the final
  normed tokens, upsampled bilinearly (align_corners=True) to the image size.
- metrics.json (avfusion.metrics.localization, percent): `ciou_ap50` (cIoU >= 0.5), `ciou_mean`,
  `auc`, `n_images`, `n_skipped_empty`; and the same for two trivial maps: a centred Gaussian
  prior (`prior_*`; its top half is the central disk) and uniform noise (`random_*`, seeded).
- audio dependence (`shuffled_audio: true`, the default; one more eval pass): the same metrics with
  mismatched audio, `shuffled_audio_ciou_ap50`, `shuffled_audio_ciou_mean`, `shuffled_audio_auc`:
  eval clip i gets the audio of the first clip at i + n//2, i + n//2 + 1, ... (mod n, n eval clips)
  that shares no label with it (unlabelled clips: any other clip). A map that ignores the audio
  scores the same as with its own audio. examples.npz: a few images, GT maps and predicted maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from ..data.manifest import split_labels
from ..engine import train
from .common import add_job_arguments, eval_dataset, job_main, media_options
from .dense_prediction import (DensePredictionConfig, denormalize, eval_loader, finish_run, run_encoder,
                               stack_examples, start_dense_job)


# `recipe` (a layer of defaults under the config files; spec 4.4: no official script exists): `ours` = the
# dataclass defaults (smoke/tiny: AdamW with layer decay, EZ-VSL-style projections); `paper` = appendix
# A.2 (plain cosine map of the encoder's tokens, no projections; Adam, lr 1e-4, batch 128, 30 epochs).
RECIPES = {
    "ours": {},
    "paper": {"optim": {"optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "layer_decay": None, "epochs": 30, "warmup_epochs": 0,
                        "effective_batch": 128},
              "projection": False},
}


@dataclass
class Config(DensePredictionConfig):
    recipe: str = "ours"                 # ours | paper (RECIPES)
    projection: bool = True              # Linear projections before the cosine (EZ-VSL-style head)
    prior_sigma: float = 0.25            # centred Gaussian prior: std as a fraction of the image side
    shuffled_audio: bool = True          # also score every image with another class's audio (shuffled_audio_*)


class AVLocalizer(nn.Module):
    """Encoder + cosine head: `model(image (B,3,S,S), audio (B,1,128,192)) -> logits (B,S,S)`."""

    def __init__(self, encoder: nn.Module, frozen: bool, projection: bool = True):
        super().__init__()
        from ..models.localization_head import CosineLocalizationHead

        self.encoder, self.frozen = encoder, frozen
        self.head = CosineLocalizationHead(encoder.embed_dim if projection else 0)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        out = run_encoder(self.encoder, self.frozen, image, audio, return_embs=False)
        return self.head(out.image, out.audio, tuple(self.encoder.image_grid), tuple(image.shape[-2:]))


def gaussian_prior(size: int, sigma: float) -> torch.Tensor:
    """Centred isotropic Gaussian (S, S), std = sigma * S."""
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size - 0.5  # (S,)
    d2 = coords[:, None] ** 2 + coords[None, :] ** 2  # (S, S)
    return torch.exp(-d2 / (2 * sigma ** 2)).float()


def summarize(evaluator, prefix: str = "") -> dict:
    out = evaluator.summary()
    return {f"{prefix}ciou_ap50": 100 * out["ciou_ap50"], f"{prefix}ciou_mean": 100 * out["ciou_mean"],
            f"{prefix}auc": 100 * out["auc"]}


def mismatched_partners(labels: list[str]) -> list[int]:
    """For each clip i, the first j in i + n//2, i + n//2 + 1, ... (mod n) whose label shares no class
    with clip i's ('' = unlabelled: any j != i). Deterministic; raises when a clip has no such partner."""
    n = len(labels)
    names = [set(split_labels(label)) for label in labels]
    partners = []
    for i in range(n):
        for k in range(n):
            j = (i + n // 2 + k) % n
            if j != i and not (names[i] & names[j]):
                partners.append(j)
                break
        else:
            raise ValueError(f"shuffled audio: eval clip {i} (label {labels[i]!r}) has no clip of another class "
                             f"among the {n} eval clips; set shuffled_audio=false")
    return partners


def eval_clips(dataset) -> list[tuple]:
    """(part, manifest row) of each item of an eval dataset (a LocalizationDataset or a ConcatDataset of them)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    return [(part, row) for part in parts for row in part.rows]


class MismatchedAudio(Dataset):
    """Item i of `dataset` with the audio of item `partners[i]` (eval datasets are deterministic).
    `audio_of(j)` gives item j's audio; by default `dataset[j]["audio"]` (decodes the whole item)."""

    def __init__(self, dataset, partners: list[int], audio_of=None):
        self.dataset, self.partners = dataset, partners
        self.audio_of = audio_of or (lambda j: dataset[j]["audio"])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        item["audio"] = self.audio_of(self.partners[index])
        return item


def mismatched_audio_set(eval_set) -> MismatchedAudio:
    """The eval set with each clip's audio from another class (the partner's audio only is decoded)."""
    clips = eval_clips(eval_set)
    partners = mismatched_partners([row.get("label", "") for _, row in clips])
    return MismatchedAudio(eval_set, partners, lambda j: clips[j][0].audio_item(clips[j][1], gain=False)[0])


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, prior_sigma: float, n_examples: int,
             shuffled_loader=None) -> tuple[dict, dict]:
    """Metrics of the model's maps, of the two trivial maps and (with `shuffled_loader`) of the model's
    maps computed with mismatched audio; plus a few examples."""
    from ..metrics.localization import LocalizationEvaluator

    model.eval()
    ours, prior, uniform = LocalizationEvaluator(), LocalizationEvaluator(), LocalizationEvaluator()
    gen = torch.Generator().manual_seed(0)
    examples: dict[str, list] = {"image": [], "gt_map": [], "pred": []}
    for batch in loader:
        logits = model(batch["image"].to(device), batch["audio"].to(device)).float().cpu()  # (B, S, S)
        gt = batch["gt_map"]  # (B, S, S)
        ours.update(logits, gt)
        prior.update(gaussian_prior(gt.shape[-1], prior_sigma).expand_as(gt), gt)
        uniform.update(torch.rand(gt.shape, generator=gen), gt)
        if len(examples["image"]) < n_examples:
            examples["image"].append(torch.from_numpy(denormalize(batch["image"])))
            examples["gt_map"].append(gt)
            examples["pred"].append(torch.sigmoid(logits))
    metrics = summarize(ours)
    metrics.update(summarize(prior, prefix="prior_"))
    metrics.update(summarize(uniform, prefix="random_"))
    if shuffled_loader is not None:
        shuffled = LocalizationEvaluator()
        for batch in shuffled_loader:
            shuffled.update(model(batch["image"].to(device), batch["audio"].to(device)).float().cpu(), batch["gt_map"])
        metrics.update(summarize(shuffled, prefix="shuffled_audio_"))
    metrics.update(n_images=len(ours.cious), n_skipped_empty=ours.n_skipped_empty)
    return metrics, stack_examples(examples, n_examples)


def run(cfg: Config, out_dir: Path) -> dict:
    from ..data.datasets import LocalizationDataset
    from ..models.localization_head import localization_loss

    out_dir = Path(out_dir)
    t0, device, encoder = start_dense_job(cfg)
    model = AVLocalizer(encoder, cfg.freeze_encoder, cfg.projection)
    media = media_options(cfg.data)
    train_set = LocalizationDataset(cfg.data.manifest, cfg.data.train_split, True, cfg.data.image_size, **media)
    eval_set = eval_dataset(lambda split: LocalizationDataset(cfg.data.manifest, split, False, cfg.data.image_size,
                                                              **media),
                            cfg.data.eval_split)
    # partners chosen before training, so a set without a second class fails at once
    shuffled_set = mismatched_audio_set(eval_set) if cfg.shuffled_audio else None

    def loss_fn(net, batch):
        return localization_loss(net(batch["image"], batch["audio"]), batch["gt_map"]), {}

    result = train(model, loss_fn, train_set, cfg.optim, out_dir, seed=cfg.seed, device=str(device),
                   workers=cfg.data.workers, job_config=cfg, desc="localization")
    loader = eval_loader(eval_set, cfg.data.eval_batch_size, cfg.data.workers)
    shuffled_loader = None if shuffled_set is None else eval_loader(shuffled_set, cfg.data.eval_batch_size,
                                                                     cfg.data.workers)
    metrics, examples = evaluate(result.model, loader, device, cfg.prior_sigma, cfg.n_examples, shuffled_loader)
    return finish_run(out_dir, cfg, result, metrics, examples, t0)


add_arguments = add_job_arguments


def main(args):
    return job_main(args, Config, run, RECIPES)
