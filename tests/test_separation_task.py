"""`avfusion separation` at smoke scale: mix-and-separate through the engine, fixed evaluation pairs,
metrics from the real masking path; the four mask losses compute what their docstrings say.

Beating the mixture-as-estimate SDR (issue 6), measured on the tiny benchmark's 192 fixed test pairs
(189 scored; mixture 0.26 dB), random-init smoke encoder unless named:
- HOLDS AT 2 OF 3 SEEDS when the frame identifies the source (+0.96 / -0.11 / +0.79 dB over the mixture at
  seeds 0 / 1 / 2, 2026-12-01; measured in an earlier session as below): `test_separation_beats_the_mixture_when_the_frame_identifies_the_source`
  (tuxav audio, one flat colour per class as every clip's frame, decoder width 64, power_weighted_bce,
  lr 3e-3, 300 steps of 16 mixtures): SDR 1.45 dB vs 0.26 (lr 1e-2: 1.11). In a plain loop with constant
  lr and per-class noise images: power_weighted_bce 1.58 dB, mse 0.95 dB after 300 steps.
- DOES NOT HOLD with tuxav's own scene frames at CPU budgets, because the visual branch does not
  recognise the sounding class: the image head of a fine-tuned smoke encoder is at chance (5.7 % for
  16 classes after 288 supervised steps), of the linear probe on the 768-step AV-MAE encoder 4.2 %.
  Without identity in the condition the two estimates are symmetric and no mask beats the mixture:
  binary_bce, weighted_ratio_bce, mse and power_weighted_bce at lr 1e-3..1e-2 for 100-576 steps, frozen
  or fine-tuned, pretrained or not, Sound of Pixels, and even frames showing the sounding object alone
  (its photo, centred, on grey or on a random background) all settle on a near-constant mask
  (0.10-0.14 dB after 300 steps).
- The loss matters: a mask template learned directly per class (no network) reaches 0.9 dB with
  binary_bce but 2.8 dB with power_weighted_bce and 2.6 dB with mse in 300 steps: the unweighted
  target spends its signal on quiet bins where the winner is the other clip's noise.
- The pipeline can express the answer: oracle masks through the same mel-mask -> iSTFT path score
  IRM 12.95 dB, the code's s1/(2 s1 + s2) target 12.64, binary 1[s1 > s2] 12.37; a constant 0.5 mask
  0.12 (below the mixture: the filterbank edges and the zero 193rd frame).
- With the tiny DAG's own job (lite encoder from its AV-MAE checkpoint, width-32 U-Net), class frames,
  power_weighted_bce at lr 3e-3, 1 152 steps of 16: +2.35 / +3.37 / +2.27 dB over the mixture at seeds 0 / 1 / 2;
  on the DAG's scene frames -0.09 dB, object-alone frames +0.02 (benchmarks/separation_budget.py, 2026-12-03).
Runtime: the class-frame test ~4-5 CPU-min (tiny tuxav generation ~25 s + 300 steps + evaluation).
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avfusion.cli import main as cli_main
from avfusion.tasks.separation import mask_loss

# class-frame test, sdr - sdr_mix over seeds 0-2: +0.96, -0.11, +0.79 dB (benchmarks/learning_margins.csv): the
# smallest gap is not positive, so it is logged, not asserted (the test's docstring)
SEPARATION_MARGIN_DB = None
# model: a job refuses a config without one (it used to default to this preset in these three tasks)
SMOKE = ["model.preset=deepavfusion-smoke", "data.image_size=64", "optim.batch_size=4", "optim.lr=0.001", "device=cpu",
         "data.eval_batch_size=6", "decoder_width=32", "optim.max_steps_per_epoch=3"]


@pytest.fixture(scope="module")
def tuxav(tuxav_smoke):
    return tuxav_smoke


def run_cli(task_sets, out):
    args = sum((["--set", s] for s in task_sets), [])
    assert cli_main(["separation", *args, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())["metrics"]


def test_smoke_separation_scores_fixed_pairs(tuxav, tmp_path):
    torch.set_num_threads(1)
    m = run_cli([f"data.manifest={tuxav}", "optim.epochs=2", *SMOKE], tmp_path)
    print("separation smoke:", {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()})
    for key in ("sdr", "sir", "sar", "sdr_mix", "n_pairs", "n_skipped"):
        assert np.isfinite(m[key])
    assert m["n_pairs"] + m["n_skipped"] == 6 and m["steps"] == 6
    # the mixture-as-estimate SDR of the 6 fixed test pairs, recomputed here with mir_eval
    from avfusion.data.datasets import MixtureDataset
    from avfusion.metrics.separation import separation_metrics

    items = [MixtureDataset(tuxav, "test", train=False, image_size=64)[i] for i in range(6)]
    refs = torch.stack([it["source_waves"] for it in items])  # (6, 2, T)
    mix = torch.stack([it["mix_wave"] for it in items])  # (6, T)
    ref = separation_metrics(refs, mix[:, None].expand_as(refs), mix=mix, backend="mir_eval")
    assert m["sdr_mix"] == pytest.approx(float(ref["sdr_mix"].mean()), abs=0.01)
    examples = np.load(tmp_path / "examples.npz")
    assert examples["pred_mask"].shape == (4, 2, 128, 192) and examples["source_audio"].shape == (4, 2, 128, 192)


def test_sound_of_pixels_method_trains_through_the_same_job(tuxav, tmp_path):
    torch.set_num_threads(1)
    sop = ["method=sound_of_pixels", "sop.channels=4", "sop.visual_widths=[8,8,16,16]", "sop.unet_ngf=4",
           "optim.max_steps_per_epoch=1", "n_examples=0"]
    m = run_cli([f"data.manifest={tuxav}", "optim.epochs=1", *SMOKE, *sop], tmp_path)
    assert m["steps"] == 1 and np.isfinite(m["sdr"]) and m["n_pairs"] == 6


def spectrograms():
    gen = torch.Generator().manual_seed(0)
    s1 = torch.rand(2, 1, 8, 6, generator=gen) + 0.01  # mel power of each source
    s2 = torch.rand(2, 1, 8, 6, generator=gen) + 0.01
    return s1, s2, torch.log10(s1), torch.log10(s2), torch.log10(s1 + s2)


def test_weighted_ratio_bce_is_the_codes_s1_over_2s1_plus_s2_target():
    s1, s2, log1, log2, logmix = spectrograms()
    logits = torch.randn(2, 1, 8, 6)
    target = s1 / (2 * s1 + s2 + 1e-5)
    weight = torch.clamp(torch.log1p(s1 + s2), 1e-3, 10)
    expected = F.binary_cross_entropy_with_logits(logits, target, weight)
    got = mask_loss("weighted_ratio_bce", logits, logmix, log1, log2, None, None)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert float(target.max()) <= 0.5


def test_binary_bce_target_compares_with_the_other_source():
    s1, s2, log1, log2, logmix = spectrograms()
    logits = torch.randn(2, 1, 8, 6)
    target = (s1 > s2).float()
    assert 0 < float(target.mean()) < 1  # never all-zero, unlike 1[s1 > s1 + s2] (bug item 31)
    expected = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(mask_loss("binary_bce", logits, logmix, log1, log2, None, None), expected)


def test_mse_loss_is_on_the_separated_waveform():
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(1, 48000, generator=gen) * 0.1
    all_pass = torch.full((1, 1, 128, 192), 30.0)  # sigmoid = 1: the estimate is (almost) the mixture
    close = mask_loss("mse", all_pass, None, None, None, mix, mix)
    far = mask_loss("mse", -all_pass, None, None, None, mix, mix)  # silent estimate
    assert float(close) < 0.05 * float(far)
    assert float(far) == pytest.approx(float((mix ** 2).mean()), rel=1e-3)


def test_power_weighted_bce_weights_bins_by_their_share_of_mixture_power():
    s1, s2, log1, log2, logmix = spectrograms()
    logits = torch.randn(2, 1, 8, 6)
    mix = 10.0 ** logmix
    weight = mix / mix.mean(dim=(1, 2, 3), keepdim=True)
    expected = (F.binary_cross_entropy_with_logits(logits, (s1 > s2).float(), reduction="none") * weight).mean()
    got = mask_loss("power_weighted_bce", logits, logmix, log1, log2, None, None)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert float(weight.mean(dim=(1, 2, 3)).sub(1).abs().max()) < 1e-5
    assert not torch.allclose(got, mask_loss("binary_bce", logits, logmix, log1, log2, None, None))


@pytest.fixture(scope="module")
def tiny_with_class_frames(tuxav_tiny, tmp_path_factory):
    """The tiny tuxav benchmark with every clip's frame replaced by its class's own fixed image
    (one flat colour per class, so random crops and flips keep it): a visual condition that identifies
    the source for sure."""
    from avfusion.data.tuxav import class_colour_frames

    return class_colour_frames(tuxav_tiny, tmp_path_factory.mktemp("tiny_sep") / "class_frames")


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.evidence   # ~10 min under load and asserts no margin: run by benchmarks/learning_margins.py, not by make test
def test_separation_beats_the_mixture_when_the_frame_identifies_the_source(tiny_with_class_frames, learning_seed,
                                                                          margin_check, tmp_path):
    """The whole job (random-init smoke encoder + the official U-Net decoder, mel mask, mixture-phase
    iSTFT, mir_eval-convention metrics on the 192 fixed test pairs) learns to separate once the frame
    carries the source's identity. On tuxav's own scene frames it does not (module docstring): there the
    visual branch does not recognise the sounding class at CPU budgets (image-only probe at chance).
    Over seeds the outcome is not reliable: sdr - sdr_mix = +0.96 / -0.11 / +0.79 dB at seeds 0 / 1 / 2 (seed 1's
    mask stays at the chance BCE 0.69), so the gap is measured and logged, not asserted; what is asserted is that
    the whole job runs and scores the 192 fixed pairs. More steps or a lower lr are the next thing to try."""
    torch.set_num_threads(1)
    m = run_cli([f"data.manifest={tiny_with_class_frames}", f"seed={learning_seed}", "model.preset=deepavfusion-smoke", "data.image_size=64", "device=cpu",
                 "decoder_width=64", "loss=power_weighted_bce", "optim.lr=0.003", "optim.batch_size=16",
                 "optim.epochs=4", "optim.max_steps_per_epoch=75", "data.eval_batch_size=32", "n_examples=0"],
                tmp_path)
    print("separation with class frames:", {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()})
    assert m["steps"] == 300 and m["n_pairs"] + m["n_skipped"] == 192
    margin_check("sdr - mixture sdr", m["sdr"], m["sdr_mix"], SEPARATION_MARGIN_DB)
