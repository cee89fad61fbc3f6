"""Sound of Pixels, the Table 4 fusion presets, and paper-scale parameter counts of every baseline."""
from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from avfusion import audio as audio_lib
from avfusion.cli import main as cli_main
from avfusion.models.registry import model_config
from avfusion.models.registry import build_encoder, build_pretrain_model


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py

# half the smallest gap over seeds 0-4 (loss drop 0.132, swap 0.207; benchmarks/learning_margins.csv)
SOP_MARGINS = {"loss_drop": 0.06, "swap": 0.1}
CLIPSEP = "clipsep_mixtures/music-vggsound"
VIOLIN = f"{CLIPSEP}/violin-WjwOm5pJlI0+3-O3HG59u1yek"
ACCORDION = f"{CLIPSEP}/accordion-PohzBumrY2Q+K-8KURljE8_FA"


def _frame(path, size=64):
    """First video frame of a real mp4, ImageNet-normalised, (3, size, size)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    x = torch.from_numpy(frame).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (x - mean) / std


def _wave(path):
    wave, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000
    return audio_lib.pad_or_trim(torch.from_numpy(wave))


@pytest.mark.learning
def test_sound_of_pixels_learns_real_mix_and_separate(testdata, margin_check):
    """Two real clips mixed; each frame must select its source's bins (SoP's binary dominance mask)."""
    model = build_pretrain_model({"preset": "sound-of-pixels-smoke"})
    violin, accordion = _wave(testdata / VIOLIN / "gt.wav"), _wave(testdata / ACCORDION / "gt.wav")
    mix_audio = audio_lib.log_mel(violin + accordion)  # (1, 128, 192)
    mel_v, mel_a = audio_lib.log_mel(violin), audio_lib.log_mel(accordion)
    images = torch.stack([_frame(testdata / VIOLIN / "av.mp4"), _frame(testdata / ACCORDION / "av.mp4")])
    mixes = torch.stack([mix_audio, mix_audio])  # (2, 1, 128, 192)
    targets = torch.stack([(mel_v > mel_a).float(), (mel_a >= mel_v).float()])  # (2, 1, 128, 192)
    logits = model(images, mixes)
    assert logits.shape == (2, 1, 128, 192)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = F.binary_cross_entropy_with_logits(model(images, mixes), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        right = F.binary_cross_entropy_with_logits(model(images, mixes), targets).item()
        swapped = F.binary_cross_entropy_with_logits(model(images.flip(0), mixes), targets).item()
    print("sound-of-pixels smoke BCE", [round(x, 4) for x in losses], f"right frames {right:.4f}, "
          f"swapped frames {swapped:.4f}")
    margin_check("first BCE - last BCE", losses[0], losses[-1], SOP_MARGINS["loss_drop"])
    # the frame decides which source's bins are kept: swapping the frames must hurt
    margin_check("BCE swapped frames - right frames", swapped, right, SOP_MARGINS["swap"])


@pytest.mark.parametrize("preset,layers,arch", [
    ("late-fusion-smoke", [1], "dense"), ("mid-fusion-smoke", [0, 1], "dense"),
    ("no-fusion-smoke", [], None), ("token-fusion-smoke", [0, 1], "token")])
@pytest.mark.learning
def test_table4_fusion_presets_train_at_smoke_size(preset, layers, arch, learning_seed, margin_check):
    model = build_pretrain_model({"preset": preset})
    enc = model.encoder
    assert enc.fusion_layers == layers
    if arch:
        assert enc.fusion_arch == arch
    image, audio = torch.randn(4, 3, 64, 64), torch.randn(4, 1, 128, 192)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        torch.manual_seed(1 + learning_seed)  # same masks each step
        loss = model(image, audio)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    margin_check("first loss - last loss", losses[0], losses[-1], 0.15)   # smallest over seeds 0-4 and presets: 0.348
    out = enc(image, audio)
    assert out.fusion.shape == (4, 8, 64)  # smoke: 4 + 2 + 2 fusion tokens


def test_mid_and_late_fusion_layers_at_paper_and_tiny_depth():
    assert model_config("late-fusion-paper")["fusion"]["layers"] == 11
    assert model_config("mid-fusion-paper")["fusion"]["layers"] == "9-10-11"
    assert model_config("no-fusion-paper")["fusion"]["layers"] == "none"
    assert model_config("mid-fusion-tiny")["fusion"]["layers"] == "1-2-3"
    assert build_encoder({"preset": "late-fusion-tiny"}).fusion_layers == [3]


def _summary_total(capsys, preset):
    assert cli_main(["model-summary", "--preset", preset]) == 0
    lines = capsys.readouterr().out.splitlines()
    with capsys.disabled():
        print(f"{preset}: {lines[-2]}, {lines[-1]}")
    parts = {line.rsplit(maxsplit=1)[0].strip(): int(line.split()[-1].replace(",", "")) for line in lines[1:-2]}
    return int(lines[-1].split()[-1]), int(lines[-2].split()[-1]), parts


def test_paper_scale_parameter_counts_via_model_summary(capsys):
    vit_block = 7_087_872  # ViT-B block (timm): qkv + proj + fc1 + fc2 + 2 LN
    # Table 4 variants: the no-fusion model plus one (late) / three (mid) dense blocks or 12 token
    # blocks of the spec's per-block counts (2.2: dense 2,073,408, token 1,778,496 at 0.25/1.0)
    none, _, _ = _summary_total(capsys, "no-fusion-paper")
    assert _summary_total(capsys, "late-fusion-paper")[0] == none + 2_073_408
    assert _summary_total(capsys, "mid-fusion-paper")[0] == none + 3 * 2_073_408
    assert _summary_total(capsys, "token-fusion-paper")[0] == none + 12 * 1_778_496
    assert _summary_total(capsys, "deepavfusion-vggsound")[0] == none + 12 * 8_125_824
    # CAV-MAE: 11 + 11 ViT-B blocks + one joint block with 4 extra LayerNorms (2 x 2 x 768)
    total, trainable, parts = _summary_total(capsys, "cav-mae-paper")
    assert parts["fusion blocks"] == vit_block + 4 * 2 * 768  # the joint block
    assert parts["image branch"] == 11 * vit_block + (768 * 3 * 256 + 768) + 196 * 768 + 2 * 768
    assert total == 190_335_744
    # Sound of Pixels: a ResNet-18 trunk (11,176,512 without its fc) + 3x3 conv 512 -> 32
    total, trainable, parts = _summary_total(capsys, "sound-of-pixels-paper")
    with torch.device("meta"):
        sop = build_pretrain_model({"preset": "sound-of-pixels-paper"})
    assert sum(p.numel() for p in sop.net_frame.parameters()) == 11_176_512 + 512 * 32 * 9 + 32
    assert trainable == 32_683_299


def test_sound_of_pixels_config_errors_name_the_key():
    from avfusion.config import ConfigError, from_dict
    from baselines.sound_of_pixels import SoPConfig

    assert from_dict(SoPConfig, {"visual_widths": [8, 16], "visual_blocks": [1, 1]}).visual_widths == (8, 16)
    with pytest.raises(ConfigError, match="sop.visual_blocks"):
        from_dict(SoPConfig, {"visual_widths": [8, 16], "visual_blocks": [1]}, prefix="sop")
    with pytest.raises(ConfigError, match="model.unet_downs"):
        model_config("sound-of-pixels-smoke", ["unet_downs=7"])
