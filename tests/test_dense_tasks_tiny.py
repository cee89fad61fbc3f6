"""Dense tasks on the tiny tuxav benchmark (1920 clips, 16 classes) from an AV-MAE-pretrained
smoke-size encoder (conftest's session fixture `pretrained_tiny`, shared with test_linprobe's comparison;
its seed follows `--learning-seed`). Every margin is set over seeds: benchmarks/learning_margins.csv.

Localization beats the centred-Gaussian prior on the 384 val+test images. In tuxav every object's
long side is U(0.40, 0.65) of the frame (sounding object and silent distractors alike), so size does
not reveal the sounding object. Measured (seed 0, 288 steps): ciou_mean 30.51 vs prior 27.61,
ciou_ap50 9.11 vs 4.17, auc 30.59 vs 27.73 (random map 14.65); fine-tuning seed 1: 30.52, 8.07, 30.46.
The ap50 margin is small (it was +5 when the sounding object was drawn larger, 20.05 vs 10.94):
with median binarisation a cIoU >= 0.5 needs a box of >= 25 % of the image, which 15 % of the
images now have (32 % before), so ap50 is low for every map.

At this budget the map does not use the audio. With each image paired with another class's audio (metrics
`shuffled_audio_*`) the same model scores ciou_mean 30.49 (own audio 30.51), ap50 8.33 (9.11), auc
30.63 (30.59) at seed 0; 30.58 (30.52), 8.07 (8.07), 30.55 (30.46) at seed 1; after 10 epochs
(960 steps, seed 0) 30.75 (30.84). So what it learned is where objects are, not which one sounds
(the linear probe's image head is at chance, 4 % for 16 classes, so the visual tokens do not tell the
classes apart). Only after 30 epochs (2880 steps, seed 0, ~4 CPU-min) a small gap appears: 30.30
(31.07), ap50 6.77 (7.29), auc 30.43 (31.09). No assertion on own vs shuffled audio: no clear margin
at any run tried.

Separation does not beat the mixture here (see tests/test_separation_task.py for the measurements).
Runtime of this module on an idle 2-core host: the shared pretraining ~2m20s, localization ~0.5 min,
segmentation ~1.5 min.
"""
from __future__ import annotations

import pytest
import torch

from avfusion.tasks.common import load_job_config

COMMON = ["data.image_size=64", "device=cpu", "model.preset=deepavfusion-smoke"]
# margins = at most half the smallest gap over seeds 0-2 (benchmarks/learning_margins.csv): localization gaps
# ciou_mean 2.30-2.90, auc 2.20-2.85, ciou_ap50 2.86-4.95 (the old +3 on ap50 failed at seed 2); segmentation gaps
# avsbench_fscore 25.2-27.0, fscore 31.1-32.9, miou 0.95-1.32; avsbench_miou -5.4 to -4.6 (not asserted)
LOCALIZATION_MARGINS = {"ciou_mean": 1.1, "auc": 1.1, "ciou_ap50": 1.4}
SEGMENTATION_RECIPE = ["data.eval_split=val+test", "data.eval_batch_size=32", "decoder_min_width=16",
                       "optim.batch_size=16", "optim.lr=0.002", "optim.epochs=3", "optim.warmup_epochs=0",
                       "optim.layer_decay=1.0", "n_examples=0"]
SEGMENTATION_MARGINS = {"avsbench_fscore": 12.5, "fscore": 15.5, "miou": 0.45,
                        "avsbench_miou": None}   # None: measured, not asserted (test docstring)


@pytest.mark.slow   # ~0.5 CPU-min, plus the session's tiny pretraining (~2.5 CPU-min, shared with test_linprobe)
@pytest.mark.learning
def test_localization_beats_the_centred_prior_on_the_tiny_benchmark(tuxav_tiny, pretrained_tiny, learning_seed,
                                                                    margin_check, tmp_path):
    from avfusion.tasks import localization

    torch.set_num_threads(1)
    cfg = load_job_config(localization.Config, [], COMMON + [
        f"data.manifest={tuxav_tiny}", f"init.checkpoint={pretrained_tiny}", f"seed={learning_seed}",
        "data.eval_split=val+test", "data.eval_batch_size=32", "optim.batch_size=16", "optim.lr=0.001",
        "optim.epochs=3", "n_examples=0",
        # the measured run's effective optimizer, pinned (an `optim.*` override currently rebuilds the
        # section from OptimConfig's class defaults: no layer decay, betas 0.9/0.95)
        "optim.layer_decay=null", "optim.betas=[0.9,0.95]", "optim.weight_decay=0.05", "optim.warmup_epochs=0"])
    m = localization.run(cfg, tmp_path)
    print(f"localization tiny: ciou_mean {m['ciou_mean']:.2f} vs prior {m['prior_ciou_mean']:.2f}; "
          f"ciou_ap50 {m['ciou_ap50']:.2f} vs prior {m['prior_ciou_ap50']:.2f}; auc {m['auc']:.2f} vs prior "
          f"{m['prior_auc']:.2f}; random map ciou_mean {m['random_ciou_mean']:.2f}")
    print(f"with another class's audio: ciou_mean {m['shuffled_audio_ciou_mean']:.2f}, ciou_ap50 "
          f"{m['shuffled_audio_ciou_ap50']:.2f}, auc {m['shuffled_audio_auc']:.2f}")
    assert m["n_images"] == 384 and m["n_skipped_empty"] == 0 and m["steps"] == 3 * 96
    margin_check("ciou_mean - prior", m["ciou_mean"], m["prior_ciou_mean"], LOCALIZATION_MARGINS["ciou_mean"])
    margin_check("auc - prior", m["auc"], m["prior_auc"], LOCALIZATION_MARGINS["auc"])
    margin_check("ciou_ap50 - prior", m["ciou_ap50"], m["prior_ciou_ap50"], LOCALIZATION_MARGINS["ciou_ap50"])


@pytest.mark.slow   # ~1 CPU-min, plus the session's tiny pretraining
@pytest.mark.learning
def test_segmentation_beats_both_trivial_masks_in_both_conventions(tuxav_tiny, pretrained_tiny, learning_seed,
                                                                   margin_check, tmp_path):
    """S4-style binary segmentation of the sounding object on the 384 val+test frames, from the pretrained
    encoder (288 steps of 16, the official BCE). Each score is compared with the better of the two trivial
    masks (all foreground, all background) in its own convention. The F-scores (AVSBench's pooled-curve
    F-max and DeepAVFusion's per-frame F-max) beat both by a wide margin, and so does DeepAVFusion's
    background-included mIoU, narrowly; margins: SEGMENTATION_MARGINS (half the smallest gap over seeds).
    AVSBench's mIoU (per-frame foreground IoU at probability 0.5) does NOT beat the all-foreground mask at
    this budget and is logged, not asserted: seeds 0-2 2.76 / 2.01 / 2.06 vs 7.39 (lr 2e-3; at seed 0 lr 5e-3
    gave 0.02 and lr 1e-2 0.03).
    The model ranks the object's pixels (F-max) but is not yet confident enough to cross 0.5 on them: the
    BCE plateaus at 0.24-0.25 against 0.264 for the best constant (7.4 % foreground); a longer schedule is
    the next thing to try, at the cost of CPU-minutes the test suite does not have."""
    from avfusion.tasks import segmentation

    torch.set_num_threads(1)
    cfg = load_job_config(segmentation.Config, [], COMMON + [
        f"data.manifest={tuxav_tiny}", f"init.checkpoint={pretrained_tiny}", f"seed={learning_seed}",
        *SEGMENTATION_RECIPE])
    m = segmentation.run(cfg, tmp_path)
    print("segmentation tiny:", {k: round(v, 2) for k, v in sorted(m.items()) if "iou" in k or "fscore" in k})
    assert m["n_frames"] == 384 and m["n_skipped_empty"] == 0
    for key, margin in SEGMENTATION_MARGINS.items():
        floor = max(m[f"allfg_{key}"], m[f"allbg_{key}"])
        margin_check(f"{key} - best trivial mask", m[key], floor, margin)
