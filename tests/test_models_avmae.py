"""AV-MAE and unimodal MAE: masking counts, decoder key layout, loss definition, loss falls on a
fixed batch of real demo clips; presets, registry and the parameter-count summary."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import torchaudio
from avfusion.config import ConfigError
from avfusion.models import summary
from avfusion.models.avmae import AVMAE, masked_patch_loss, random_masking
from avfusion.models.checkpoint import load_encoder_from_checkpoint
from avfusion.models.encoder import DeepAVFusionEncoder
from avfusion.models.presets import PRESETS
from avfusion.models.registry import model_config
from avfusion.models.registry import build_encoder, build_pretrain_model
from avfusion.models.vit import patchify

AVMAE_DROP_MARGIN = 0.08   # relative loss drop in 12 steps; smallest over seeds 0-4: 0.169 (benchmarks/learning_margins.csv)


def _real_batch(testdata, image_size=64):
    """The 4 DeepAVFusion demo clips: frame (ImageNet-normalised) and log10-mel of the 3 s audio
    (spec 1.1 parameters via torchaudio, the reference used only in tests)."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=800, hop_length=250, n_mels=128)
    images, audios = [], []
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for n in range(1, 5):
        demo = testdata / "deepavfusion" / "demos" / f"demo{n}_orig"
        img = Image.open(f"{demo}.png").convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        arr = (np.asarray(img, dtype=np.float64) / 255.0 - mean) / std
        images.append(torch.from_numpy(arr).permute(2, 0, 1).float())
        wave, rate = sf.read(f"{demo}.wav", dtype="float32")
        assert rate == 16000 and wave.shape == (48000,)
        audios.append(torch.log10(mel(torch.from_numpy(wave)) + 1e-7)[None, :, :192])   # (1, 128, 192)
    return torch.stack(images), torch.stack(audios)


def test_random_masking_keeps_official_counts_per_sample():
    ids_keep, mask, restore = random_masking(3, 196, 0.75, "cpu")
    assert ids_keep.shape == (3, 49) and mask.sum(1).tolist() == [147.0] * 3
    assert torch.equal(mask.gather(1, ids_keep), torch.zeros(3, 49))      # kept patches are unmasked
    assert not torch.equal(ids_keep[0].sort().values, ids_keep[1].sort().values)   # independent per sample
    ids_keep, mask, _ = random_masking(2, 96, 0.8, "cpu")
    assert ids_keep.shape == (2, 19)                                      # int(96 * 0.2) = 19


def test_norm_pix_loss_only_counts_masked_patches():
    target = torch.randn(2, 5, 12)
    pred = torch.zeros(2, 5, 12)
    mask = torch.tensor([[1., 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = ((norm[0, 0] ** 2).mean() + (norm[1, 4] ** 2).mean()) / 2
    torch.testing.assert_close(masked_patch_loss(target, pred, mask, True), expected)
    torch.testing.assert_close(masked_patch_loss(target, pred, mask, False),
                               ((target[0, 0] ** 2).mean() + (target[1, 4] ** 2).mean()) / 2)


@pytest.mark.learning
def test_avmae_loss_falls_on_a_fixed_batch_of_real_clips(testdata, learning_seed, margin_check):
    torch.set_num_threads(1)
    torch.manual_seed(learning_seed)
    image, audio = _real_batch(testdata)
    model = build_pretrain_model({"preset": "deepavfusion-smoke"})
    out = model(image, audio)
    assert out["pred_image"].shape == (4, 16, 768) and out["pred_audio"].shape == (4, 96, 256)
    assert out["mask_image"].sum(1).tolist() == [12.0] * 4 and out["mask_audio"].sum(1).tolist() == [77.0] * 4
    torch.testing.assert_close(out["loss"], out["loss_image"] + out["loss_audio"])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = model(image, audio)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # relative drop of the mean loss (first 3 -> last 3 steps); margin: AVMAE_DROP_MARGIN
    margin_check("relative loss drop", 1 - np.mean(losses[-3:]) / np.mean(losses[:3]), 0.0, AVMAE_DROP_MARGIN)
    assert model.encoder.image.pos_embed.grad is None                 # frozen encoder table
    assert model.image_decoder_pos_embed.grad is not None             # official: decoder table trains


def test_avmae_state_dict_names_match_the_released_layout():
    with torch.device("meta"):
        model = build_pretrain_model({"preset": "deepavfusion-vggsound"})
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 893
    expected = {"audio_decoder_mask_token": (1, 1, 512), "audio_decoder_pos_embed": (1, 96, 512),
                "image_decoder_mask_token": (1, 1, 512), "image_decoder_pos_embed": (1, 196, 512),
                "image_decoder_embed.weight": (512, 768), "image_decoder_pred.weight": (768, 512),
                "audio_decoder_pred.weight": (256, 512), "image_decoder_blocks.7.mlp.fc1.weight": (2048, 512),
                "image_decoder_norm.weight": (512,), "encoder.fusion_tokens": (1, 32, 768),
                "encoder.image.pos_embed": (1, 196, 768), "encoder.audio.pos_embed": (1, 96, 768),
                "encoder.fusion_blocks.11.attn.q.weight": (192, 768)}
    for key, shape in expected.items():
        assert shapes[key] == shape
    assert not any("cls_token" in k for k in shapes)


def test_paper_scale_totals_and_parts_on_meta():
    totals = {}
    for preset in ("deepavfusion-vggsound", "deepavfusion-audioset"):
        model = summary.build_on_meta({"preset": preset})
        totals[preset] = summary.count_parts(model)
    vgg, aset = totals["deepavfusion-vggsound"], totals["deepavfusion-audioset"]
    assert sum(vgg.values()) == 320_563_712 and sum(aset.values()) == 378_997_760
    assert vgg["image branch"] == 85_797_120 and vgg["audio branch"] == 85_327_104
    assert vgg["fusion blocks"] + vgg["fusion tokens+norm"] == 97_536_000
    assert aset["fusion blocks"] + aset["fusion tokens+norm"] == 155_970_048
    assert vgg["image decoder"] == 26_108_672 and vgg["audio decoder"] == 25_794_816
    assert model_config("deepavfusion-vggsound", ["fusion.mlp_ratio=4.0"])["fusion"]["mlp_ratio"] == 4.0
    yaml_default = summary.build_on_meta({"preset": "deepavfusion-vggsound", "fusion": {"mlp_ratio": 4.0}})
    assert sum(summary.count_parts(yaml_default).values()) == 363_058_688


def test_model_summary_command_prints_totals(capsys):
    from avfusion.cli import main
    assert main(["model-summary", "--preset", "deepavfusion-vggsound"]) == 0
    assert "total 320563712" in capsys.readouterr().out.splitlines()
    assert main(["model-summary", "--preset", "deepavfusion-audioset"]) == 0
    assert "total 378997760" in capsys.readouterr().out.splitlines()


# this module's own presets only: baselines (e.g. CAV-MAE, 0.75/0.75 masking) add theirs to PRESETS
# when imported, and whether that happened before collection depends on the test order
OWN_PRESETS = sorted(name for name, d in PRESETS.items() if d.get("family") in ("deepavfusion", "mae"))


@pytest.mark.parametrize("preset", OWN_PRESETS)
def test_every_preset_validates_and_builds_on_meta(preset):
    cfg = model_config(preset)
    assert (cfg["image"]["mask_ratio"], cfg["audio"]["mask_ratio"]) == (0.75, 0.8)   # spec 3.1
    assert cfg["image"]["norm_loss"] and cfg["audio"]["norm_loss"]
    model = summary.build_on_meta({"preset": preset})
    enc = model.encoder
    assert enc.embed_dim == cfg["embed_dim"] and enc.depth == cfg["depth"]
    assert summary.summary_lines(model)[-1].startswith("total ")


def test_tiny_preset_shapes_and_unimodal_encoder_contract():
    torch.set_num_threads(1)
    cfg = model_config("deepavfusion-tiny")
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["decoder"]) == \
        (192, 4, 3, {"embed_dim": 128, "depth": 2, "num_heads": 4, "mlp_ratio": 4.0})
    enc = build_encoder({"preset": "deepavfusion-tiny"})
    assert enc.image_grid == (7, 7) and enc.audio_grid == (8, 12) and enc.fusion_tokens.shape == (1, 32, 192)
    mae = build_encoder({"preset": "mae-audio-smoke"})
    out = mae(None, torch.randn(2, 1, 128, 192), return_embs=True)
    assert out.audio.shape == (2, 96, 64) and out.image.shape == (2, 0, 64) and out.fusion.shape == (2, 0, 64)
    assert mae.image_grid == (0, 0) and len(out.layers) == 2


def test_unimodal_mae_checkpoint_initialises_a_deepavfusion_branch(tmp_path):
    mae = build_pretrain_model({"preset": "mae-image-smoke"})
    out = mae(torch.randn(2, 3, 64, 64), None)
    assert set(out) == {"loss", "loss_image", "pred_image", "mask_image"} and out["loss"].item() > 0
    assert "image_decoder_embed.weight" in mae.state_dict() and "encoder.image.norm.weight" in mae.state_dict()
    torch.save({"state_dict": mae.state_dict()}, tmp_path / "mae.pth")
    model = build_pretrain_model({"preset": "deepavfusion-smoke", "image": {"pretrained": str(tmp_path / "mae.pth")}})
    torch.testing.assert_close(model.encoder.image.blocks[1].attn.qkv.weight, mae.encoder.image.blocks[1].attn.qkv.weight)
    # and our own AV-MAE checkpoints load back into a downstream encoder
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "avmae.pth")
    enc = build_encoder({"preset": "deepavfusion-smoke"})
    load_encoder_from_checkpoint(enc, tmp_path / "avmae.pth")
    torch.testing.assert_close(enc.fusion_tokens, model.encoder.fusion_tokens)


def test_bad_model_configs_name_the_key():
    with pytest.raises(ConfigError, match="model.preset.*deepavfusion-smoke"):
        model_config("deepavfusion-huge")
    with pytest.raises(ConfigError, match="model.fusion.arch"):
        model_config("deepavfusion-smoke", {"fusion": {"arch": "mbt"}})
    with pytest.raises(ConfigError, match="model.fusion.dense_implementation"):
        model_config("deepavfusion-smoke", ["fusion.dense_implementation=fast"])
    with pytest.raises(ConfigError, match="fusion.num_heads"):
        model_config("deepavfusion-smoke", {"fusion": {"num_heads": 3}})
    with pytest.raises(ConfigError, match="model.family"):
        build_encoder({"family": "perceiver"})
    with pytest.raises(ValueError, match="fusion_layers"):
        build_encoder({"preset": "deepavfusion-smoke", "fusion": {"layers": "late"}})
    with pytest.raises(ValueError, match="image: expected"):
        AVMAE(DeepAVFusionEncoder(embed_dim=32, depth=1, num_heads=2, fusion_num_heads=2,
                                  image_size=(32, 32)), decoder_dim=16, decoder_depth=1, decoder_num_heads=2)(
            torch.randn(1, 3, 64, 64), torch.randn(1, 1, 128, 192))


def test_patchify_targets_use_imagenet_normalised_pixels_row_major():
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32)
    patches = patchify(image, 16)                                  # (1, 4, 768), channel last in a patch
    torch.testing.assert_close(patches[0, 1, :3], image[0, :, 0, 16])
