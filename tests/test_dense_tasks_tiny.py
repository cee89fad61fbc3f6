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
# on tuxav_tiny_solo avsbench_miou 40.5-42.8, avsbench_fscore 53.5-55.8, miou 25.7-26.9, fscore 61.5-63.5; on tuxav_tiny
# (evidence) avsbench_fscore 25.2-27.0, fscore 31.1-32.9, miou 0.95-1.32; avsbench_miou -5.4 to -4.6 (not asserted)
LOCALIZATION_MARGINS = {"ciou_mean": 1.1, "auc": 1.1, "ciou_ap50": 1.4}
SEGMENTATION_RECIPE = ["data.eval_split=val+test", "data.eval_batch_size=32", "decoder_min_width=16",
                       "optim.batch_size=16", "optim.lr=0.002", "optim.epochs=3", "optim.warmup_epochs=0",
                       "optim.layer_decay=1.0", "n_examples=0"]
SEGMENTATION_MARGINS = {  # None: measured, not asserted (test docstring)
    "tuxav_tiny_solo": {"avsbench_miou": 20.0, "avsbench_fscore": 26.0, "miou": 12.5, "fscore": 30.0},
    "tuxav_tiny": {"avsbench_miou": None, "avsbench_fscore": 12.5, "miou": 0.45, "fscore": 15.5}}


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


@pytest.mark.slow   # ~1 CPU-min, plus the session's tiny pretraining and the solo benchmark (~30 CPU-s)
@pytest.mark.learning
@pytest.mark.parametrize("benchmark", ["tuxav_tiny_solo", pytest.param("tuxav_tiny", marks=pytest.mark.evidence)])
def test_segmentation_beats_both_trivial_masks_in_both_conventions(benchmark, pretrained_tiny, learning_seed,
                                                                   margin_check, tmp_path, request):
    """S4-style binary segmentation of the sounding object on the 384 val+test frames, from the pretrained
    encoder (288 steps of 16, the official BCE). Each score is compared with the better of the two trivial
    masks (all foreground, all background) in its own convention: AVSBench's (per-frame foreground IoU at
    probability 0.5, pooled-curve F-max) and DeepAVFusion's (background-included mIoU, per-frame F-max).
    Margins: SEGMENTATION_MARGINS, half the smallest gap over seeds 0-2 (benchmarks/learning_margins.csv).

    `tuxav_tiny_solo` (asserted, in the default run): the same clips drawn without the silent distractors,
    so the sounding object is the only object and the masks can be learned without audio. This checks the
    job: encoder + decoder + loss + both evaluation conventions learn masks that cross p = 0.5.

    `tuxav_tiny` (marker `evidence`, not in the default run; benchmarks/learning_margins.py runs it): with 1-2
    silent distractors the F-scores and DeepAVFusion's mIoU still beat both masks, but AVSBench's mIoU does
    not beat all-foreground (seeds 0-2: 2.76 / 2.01 / 2.06 vs 7.39; lr 5e-3 and 1e-2 at seed 0: 0.02, 0.03),
    so it is logged, not asserted. Why: a model that does not use the audio (the localization test measures
    that it does not, at this budget) can only give each of the k objects a posterior of about 1/k < 0.5 of
    being the sounding one, so it ranks object pixels (F-max) but never crosses 0.5 on them. Whether audio
    picks the object is the DAG's question (issue 15), not this unit test's."""
    from avfusion.tasks import segmentation

    torch.set_num_threads(1)
    cfg = load_job_config(segmentation.Config, [], COMMON + [
        f"data.manifest={request.getfixturevalue(benchmark)}", f"init.checkpoint={pretrained_tiny}",
        f"seed={learning_seed}", *SEGMENTATION_RECIPE])
    m = segmentation.run(cfg, tmp_path)
    print(f"segmentation {benchmark}:", {k: round(v, 2) for k, v in sorted(m.items()) if "iou" in k or "fscore" in k})
    assert m["n_frames"] == 384 and m["n_skipped_empty"] == 0
    for key, margin in SEGMENTATION_MARGINS[benchmark].items():
        floor = max(m[f"allfg_{key}"], m[f"allbg_{key}"])
        margin_check(f"{key} - best trivial mask", m[key], floor, margin)
