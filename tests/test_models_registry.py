"""Every knob is overridable by config; registered families and presets work with the summary."""
from __future__ import annotations

import pytest
import torch

from avfusion.models import presets, registry, summary
from avfusion.models.avmae import UnimodalEncoder, UnimodalMAE
from avfusion.models.fusion import DenseFusionBlock, TokenFusionBlock
from avfusion.models.vit import ViT


def test_every_knob_reaches_the_built_model():
    model = registry.build_pretrain_model({
        "preset": "deepavfusion-smoke",
        "fusion": {"arch": "dense_mmi", "layers": 1, "dense_impl": "naive", "attn_ratio": 0.5,
                   "mlp_ratio": 2.0, "num_fusion_tkns": 3, "num_aggr_image_tkns": 1, "num_aggr_audio_tkns": 1},
        "image": {"mask_ratio": 0.5, "norm_loss": False}, "audio": {"mask_ratio": 0.9},
        "drop_path": 0.1, "decoder": {"depth": 2}})
    enc = model.encoder
    assert enc.fusion_blocks[0] is None and isinstance(enc.fusion_blocks[1], DenseFusionBlock)
    block = enc.fusion_blocks[1]
    assert block.attn.impl == "naive" and block.attn.q.out_features == 32 and block.mlp.fc1.out_features == 128
    assert enc.fusion_tokens.shape == (1, 5, 64)
    assert (model.image_mask_ratio, model.audio_mask_ratio, model.image_norm_loss) == (0.5, 0.9, False)
    assert enc.image.blocks[0].drop_path.drop_prob == 0.1 and block.drop_path.drop_prob == 0.1
    assert len(model.image_decoder_blocks) == 2
    out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 1, 128, 192))
    assert out["mask_image"].sum(1).tolist() == [8.0, 8.0]            # keep int(16 * 0.5)
    assert out["mask_audio"].sum(1).tolist() == [87.0, 87.0]          # keep int(96 * 0.1) = 9
    token = registry.build_encoder({"preset": "deepavfusion-smoke", "fusion": {"arch": "token", "layers": "0-1"}})
    assert all(isinstance(b, TokenFusionBlock) for b in token.fusion_blocks)


def test_model_summary_reads_a_yaml_model_section(tmp_path, capsys):
    from avfusion.cli import main
    path = tmp_path / "model.yaml"
    path.write_text("model:\n  preset: deepavfusion-vggsound\n  fusion:\n    arch: dense\n")
    assert main(["model-summary", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 12 dense blocks at 0.25 / 1.0 (2,073,408 each) replace the factorized ones (8,125,824 each)
    assert "total " + str(320_563_712 - 12 * (8_125_824 - 2_073_408)) in lines
    assert main(["model-summary", "--preset", "deepavfusion-vggsound", "--set", "fusion.layers=none"]) == 0
    assert "total " + str(320_563_712 - 12 * 8_125_824) in capsys.readouterr().out.splitlines()


def test_a_registered_family_and_preset_build_and_summarise():
    def pretrain(cfg):
        vit = ViT(input_size=(128, 192), patch_size=16, in_chans=1, embed_dim=cfg["width"], depth=1, num_heads=2)
        return UnimodalMAE(UnimodalEncoder("audio", vit), decoder_dim=16, decoder_depth=1, decoder_num_heads=2)

    registry.register("unit-test-family", pretrain, lambda cfg: pretrain(cfg).encoder)
    presets.register_preset("unit-test-preset", {"family": "unit-test-family", "width": 32})
    try:
        model = summary.build_on_meta({"preset": "unit-test-preset"})
        counts = summary.count_parts(model)
        assert counts["audio branch"] == sum(p.numel() for p in model.encoder.parameters())
        assert registry.build_encoder({"preset": "unit-test-preset", "width": 64}).embed_dim == 64
    finally:
        registry.FAMILIES.pop("unit-test-family")
        presets.PRESETS.pop("unit-test-preset")


def test_baseline_families_map_to_modules():
    assert registry.BASELINE_MODULES["cav-mae"] == "baselines.cavmae"
    assert registry.BASELINE_MODULES["sound-of-pixels"] == "baselines.sound_of_pixels"
    with pytest.raises(ValueError, match="model.family.*deepavfusion"):
        registry.build_encoder({"family": "no-such-family"})
