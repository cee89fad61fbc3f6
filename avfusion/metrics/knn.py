"""Leave-one-out 1-NN probe of an encoder's audio / image / fusion features (spec 3.3, Figure 3).

Features: the encoder without masking; mean over the image / audio / all fusion tokens (each after
its final norm), L2-normalised, gathered over ranks. Each sample is classified by the label of its
most cosine-similar *other* sample (official: the 2nd of the top-2, i.e. the same unless there are
exact ties); "all" uses the sum of the per-modality similarity matrices. Single-label: top-1
accuracy (%). Multi-label: AP/AUC of neighbour-label x similarity over seen classes (%).
Evaluation is deterministic (eval transforms, every clip of the split once).

    stats = knn_probe(encoder, dataset, batch_size=32, device="cpu")   # {acc_audio, acc_image, acc_fusion, acc_all}

Used by the pretraining job (every `knn.every` epochs) and the `avfusion knn-probe` job; the linear
probe reuses `extract_features` for its feature cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from .. import distributed as dist_utils
from ..progress import Progress
from .classification import multilabel_map_auc

MODALITIES = ("audio", "image", "fusion")


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, dataset, batch_size: int, device, workers: int = 0,
                     normalize: bool = True, desc: str = "knn features"
                     ) -> tuple[dict[str, torch.Tensor | None], torch.Tensor]:
    """Every item of `dataset` once, sharded over ranks -> ({modality: (N, D) mean-pooled rows, L2-normalised
    if `normalize`; None when the encoder has no such tokens}, labels) in dataset order."""
    was_training = encoder.training
    encoder.eval()
    n, rank, world = len(dataset), dist_utils.get_rank(), dist_utils.get_world_size()
    per_rank = -(-n // world)
    ids = list(range(rank, n, world))
    ids += [ids[-1] if ids else 0] * (per_rank - len(ids))           # equal shards for all_gather
    loader = DataLoader(Subset(dataset, ids), batch_size=batch_size, shuffle=False, num_workers=workers)
    feats: dict[str, list] = {m: [] for m in MODALITIES}
    labels = []
    progress = Progress(total=len(loader), desc=desc, every=max(1, len(loader) // 4))
    for batch in loader:
        out = encoder(batch["image"].to(device), batch["audio"].to(device))
        for m in MODALITIES:
            tokens = getattr(out, m)                                 # (B, N_m, D)
            feats[m].append(tokens.float().mean(dim=1) if tokens.shape[1] > 0 else None)
        labels.append(batch["label"].to(device))
        progress.update()
    encoder.train(was_training)

    def gather(x: torch.Tensor) -> torch.Tensor:
        x = dist_utils.all_gather_cat(x)                             # (world * per_rank, ...)
        x = x.reshape(world, per_rank, *x.shape[1:]).transpose(0, 1)  # (per_rank, world, ...): item r + j*world
        return x.reshape(world * per_rank, *x.shape[2:])[:n]        # (N, ...) in dataset order

    def finish(parts: list) -> torch.Tensor | None:
        if any(p is None for p in parts):
            return None
        x = torch.cat(parts)                                         # (per_rank, D)
        return gather(F.normalize(x, p=2, dim=1) if normalize else x)

    out_feats = {m: finish(parts) for m, parts in feats.items()}
    return out_feats, gather(torch.cat(labels))


@torch.no_grad()
def knn_loo(features: dict[str, torch.Tensor | None], labels: torch.Tensor, chunk: int = 256) -> dict[str, float]:
    """Leave-one-out 1-NN: {acc_<m>} (single-label, labels (N,)) or {map_<m>, auc_<m>} (multi-hot (N, C))."""
    present = [m for m in MODALITIES if features.get(m) is not None]
    if not present:
        raise ValueError("knn probe: no modality has features")
    n = labels.shape[0]
    if n < 2:
        raise ValueError(f"knn probe: needs at least 2 samples, got {n}")
    multilabel = labels.ndim == 2
    preds: dict[str, list] = {m: [] for m in [*present, "all"]}
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=labels.device)
        sims = {m: features[m][rows] @ features[m].T for m in present}  # (q, N) cosine similarities
        sims["all"] = torch.stack([sims[m] for m in present]).sum(0)
        for m, sim in sims.items():
            sim = sim.clone()
            sim[torch.arange(len(rows)), rows] = float("-inf")        # leave the sample itself out
            score, nn_idx = sim.max(dim=1)                             # (q,)
            preds[m].append((labels[nn_idx], score))
    out = {}
    for m, parts in preds.items():
        pred_labels = torch.cat([p for p, _ in parts])
        if multilabel:
            scores = torch.cat([p.float() * s[:, None] for p, s in parts])  # (N, C)
            stats = multilabel_map_auc(scores, labels)
            out[f"map_{m}"], out[f"auc_{m}"] = stats["map"], stats["auc"]
        else:
            out[f"acc_{m}"] = float((pred_labels == labels).float().mean().item() * 100.0)
    return out


def knn_probe(encoder: torch.nn.Module, dataset, batch_size: int, device, workers: int = 0) -> dict[str, float]:
    """Extract features of `dataset` and run the leave-one-out 1-NN probe."""
    feats, labels = extract_features(encoder, dataset, batch_size, device, workers)
    if labels.ndim == 1 and (labels < 0).any():
        raise ValueError(f"knn probe: {(labels < 0).sum().item()} clips of the probe split have no label")
    return knn_loo(feats, labels)
