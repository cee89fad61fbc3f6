"""Dense multi-clip evaluation (spec 4.2, the official `DenseVideoDataset`, dense_n = 10, dense_span = 10).

    ds = DenseClipDataset("data/tuxav-tiny", "test", image_size=112, n_clips=10, span_s=10.0)
    item = ds[0]   # image (10,3,112,112), audio (10,1,128,192), starts (10,), window_id (10,), label, ...
    logits, labels, counts = predict_dense(lambda im, au: net(im, au), loader, device)

Window placement, for a row with usable span [start, end] (`span()`), L = end - start, c = 3 s:
- S = min(span_s, L): the part of the video the windows cover, centred: s0 = start + (L - S) / 2;
- L >= c: starts = linspace(s0, s0 + S - c, n) (window i = [starts[i], starts[i] + c]);
- L < c (shorter than one clip): every start = `start`, i.e. n copies of the single window that the
  single-clip evaluation also uses, padded by the official time-reversal rule (`short_clip` = 1);
  less than MIN_AUDIO_S of audio is a MediaError naming the file, as for single clips.
- `short_span` = 1 marks L < span_s (the windows are compressed into the video). Both flags are
  per item so the caller counts them (finetune writes dense_n_short_span / dense_n_short_clip).
The official code centres a 10 s span (s0 = max(mid - 5, start)), reads its audio once and cuts n windows
at linspace(0, len - 48000, n) of what was read, so for L >= 3 s its windows also spread over min(10, L)
seconds; for L < 3 s the negative offsets take ever shorter tails of the file, each padded (not
reproduced: we repeat the padded window). Its read passes the end time s0 + 10 as a *duration*
(load_audio(start, duration)), i.e. reads [s0, 2 s0 + 10]: immaterial for 10 s VGGSound clips (s0 ~ 0),
not reproduced (we keep audio and frames on the same span).
We read each distinct window separately (the same samples as a single-clip read of that window).
Frame of window i: the still `frame`, or the video frame nearest the window centre (the official picks
frames uniformly by index between the first and last window centres: the same times up to one frame).
`frame_time` is not used: the dense windows are placed by the span alone. No randomness, except the
optional `gain_db` quirk: the official applies RandomVol(+-2 dB) to the stacked windows, one gain per
video; here drawn from a generator seeded by (gain_seed, index), so it is reproducible too.
Released-code note (besides spec bug 29): it stacks the n frames with `dim=1`, (3, n, S, S), which its
evaluate() flattens into a (3B, n, S, S) image batch, so that path cannot run as released; we stack (n, 3, S, S).
Identical windows are decoded once; `window_id[i]` = the first clip with the same start, so
`predict_dense` runs each distinct window through the model once (exact: identical inputs).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import audio as audio_lib
from ..progress import Progress
from .datasets import AVClipDataset


def dense_starts(start: float, end: float, n_clips: int, span_s: float,
                 clip_s: float = audio_lib.CLIP_SECONDS) -> tuple[np.ndarray, bool, bool]:
    """(starts (n,), short_span, short_clip) of the n dense windows of a usable span [start, end]."""
    length = end - start
    if length < clip_s:
        return np.full(n_clips, float(start)), True, True
    used = min(span_s, length)
    s0 = start + (length - used) / 2
    return np.linspace(s0, s0 + used - clip_s, n_clips), length < span_s, False


class DenseClipDataset(AVClipDataset):
    """Eval-only: n windows per video -> `image (n,3,S,S)`, `audio (n,1,128,192)`, `starts (n,)` float64,
    `window_id (n,)` long, `label`, `index`, `short_span`, `short_clip` (0/1 long)."""

    def __init__(self, manifest_dir, split: str, image_size: int, multilabel: bool = False,
                 n_clips: int = 10, span_s: float = 10.0, gain_db: float = 0.0, gain_seed: int = 0, **media_options):
        super().__init__(manifest_dir, split, train=False, image_size=image_size, multilabel=multilabel,
                         **media_options)
        if n_clips < 1 or span_s < audio_lib.CLIP_SECONDS or gain_db < 0:
            raise ValueError(f"dense evaluation: n_clips {n_clips} must be >= 1, span_s {span_s} >= "
                             f"{audio_lib.CLIP_SECONDS}, gain_db {gain_db} >= 0")
        self.n_clips, self.span_s, self.gain_db, self.gain_seed = n_clips, span_s, gain_db, gain_seed

    def starts(self, row: dict) -> tuple[np.ndarray, bool, bool]:
        start, end = self.span(row)
        return dense_starts(start, end, self.n_clips, self.span_s)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        starts, short_span, short_clip = self.starts(row)
        firsts = {}
        window_id = [firsts.setdefault(float(s), i) for i, s in enumerate(starts)]  # first clip with this start
        gain = None
        if self.gain_db > 0:
            gen = torch.Generator().manual_seed(self.gain_seed * 1_000_003 + index)
            gain = -self.gain_db + 2 * self.gain_db * torch.rand((), generator=gen).item()  # one per video
        decoded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in sorted(set(window_id)):
            t0 = float(starts[i])
            t1, centre = t0 + audio_lib.CLIP_SECONDS, t0 + audio_lib.CLIP_SECONDS / 2
            wave = self.waveform(row, t0, t1)                                   # (48000,)
            if gain is not None:
                wave = torch.clamp(wave * 10.0 ** (gain / 20.0), -1.0, 1.0)     # official RandomVol
            decoded[i] = (self.image(self.frame(row, t0, t1, centre)), audio_lib.log_mel(wave))
        label = self.label_multihot(row) if self.multilabel else torch.tensor(self.label_index(row))
        return {"image": torch.stack([decoded[j][0] for j in window_id]),      # (n, 3, S, S)
                "audio": torch.stack([decoded[j][1] for j in window_id]),      # (n, 1, 128, 192)
                "starts": torch.from_numpy(starts), "window_id": torch.tensor(window_id),
                "label": label, "index": torch.tensor(index),
                "short_span": torch.tensor(int(short_span)), "short_clip": torch.tensor(int(short_clip))}


@torch.no_grad()
def predict_dense(forward, loader, device, desc: str = "dense eval") -> tuple[dict, torch.Tensor, dict]:
    """`forward(image, audio) -> {head: logits}` on every distinct window; logits averaged over the n clips.

    Returns ({head: (N, C)} on CPU, labels (N,...), counts {videos, clips, windows_forwarded,
    short_span, short_clip}). The official averages logits (not probabilities) per head over the clips.
    """
    logits: dict[str, list] = {}
    labels = []
    counts = {"videos": 0, "clips": 0, "windows_forwarded": 0, "short_span": 0, "short_clip": 0}
    progress = Progress(total=len(loader), desc=desc, every=max(1, len(loader) // 4))
    for batch in loader:
        image, audio = batch["image"], batch["audio"]                          # (B, n, 3, S, S), (B, n, 1, 128, 192)
        b, n = image.shape[:2]
        flat_first = (torch.arange(b)[:, None] * n + batch["window_id"]).flatten()  # (B*n,) representative clip
        keep, inverse = torch.unique(flat_first, return_inverse=True)          # (K,), (B*n,)
        out = forward(image.flatten(0, 1)[keep].to(device), audio.flatten(0, 1)[keep].to(device))
        for head, value in out.items():                                        # value (K, C)
            per_clip = value.float().cpu()[inverse].reshape(b, n, -1)          # (B, n, C)
            logits.setdefault(head, []).append(per_clip.mean(1))               # (B, C)
        labels.append(batch["label"].cpu())
        counts["videos"] += b
        counts["clips"] += b * n
        counts["windows_forwarded"] += len(keep)
        counts["short_span"] += int(batch["short_span"].sum())
        counts["short_clip"] += int(batch["short_clip"].sum())
        progress.update()
    return {h: torch.cat(v) for h, v in logits.items()}, torch.cat(labels), counts
