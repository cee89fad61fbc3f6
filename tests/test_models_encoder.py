"""DeepAVFusion encoder: shapes per arch x layer set, layer loop semantics, official key layout,
checkpoint import (released layout, MAE-style unimodal), errors naming the parameter."""
from __future__ import annotations

import pytest
import torch

from avfusion.models.checkpoint import load_encoder_from_checkpoint
from avfusion.models.encoder import DeepAVFusionEncoder, parse_fusion_layers
from avfusion.models.layers import sincos_pos_table_2d
from avfusion.models.vit import ViT, load_unimodal_checkpoint, patchify, unpatchify

SMOKE = dict(embed_dim=32, depth=3, num_heads=2, fusion_num_heads=2, image_size=(32, 32),
             fusion_tokens=(4, 2, 2))


def _inputs(batch=2):
    return torch.randn(batch, 3, 32, 32), torch.randn(batch, 1, 128, 192)


@pytest.mark.parametrize("arch", ["factorized", "factorized_mmi", "dense", "dense_mmi", "token"])
@pytest.mark.parametrize("layers,expected", [("all", [0, 1, 2]), ("none", []), (1, [1]), ("0-2", [0, 2])])
def test_forward_shapes_for_every_arch_and_layer_set(arch, layers, expected):
    torch.set_num_threads(1)
    enc = DeepAVFusionEncoder(fusion_arch=arch, fusion_layers=layers, **SMOKE).eval()
    assert enc.fusion_layers == expected
    assert [i for i, b in enumerate(enc.fusion_blocks) if b is not None] == expected
    out = enc(*_inputs(), return_embs=True)
    assert out.image.shape == (2, 4, 32) and out.audio.shape == (2, 96, 32) and out.fusion.shape == (2, 8, 32)
    assert len(out.layers) == 3 and all(len(t) == 3 for t in out.layers)
    assert (enc.embed_dim, enc.depth, enc.image_grid, enc.audio_grid) == (32, 3, (2, 2), (8, 12))
    # layers hold the pre-norm tokens: the final norms of the last entry are the outputs
    img, aud, fus = out.layers[-1]
    torch.testing.assert_close(enc.image.norm(img), out.image)
    torch.testing.assert_close(enc.fusion_norm(fus), out.fusion)
    if not expected:   # no fusion layer: fusion tokens pass through unchanged
        torch.testing.assert_close(fus, enc.fusion_tokens.expand(2, -1, -1))
    assert enc(*_inputs()).layers is None


def test_fusion_block_sees_previous_layer_tokens_and_branches_see_fusion_tokens():
    enc = DeepAVFusionEncoder(fusion_arch="factorized", fusion_layers="all", **SMOKE).eval()
    seen = {}
    enc.fusion_blocks[1].register_forward_hook(lambda mod, args, out: seen.update(args=args))
    image, audio = _inputs()
    out = enc(image, audio, return_embs=True)
    x_fus, x_img, x_aud = seen["args"]
    img0, aud0, fus0 = out.layers[0]
    torch.testing.assert_close(x_img, img0)   # layer-0 outputs, not layer-1 outputs
    torch.testing.assert_close(x_aud, aud0)
    torch.testing.assert_close(x_fus, fus0)
    # at a fusion layer the image block runs over [fusion ; image] and keeps the image positions
    x_img_emb, _ = enc.embed(image, audio)
    joint = enc.image.blocks[0](torch.cat([enc.fusion_tokens.expand(2, -1, -1), x_img_emb], 1))[:, 8:]
    torch.testing.assert_close(joint, img0)
    assert not torch.allclose(enc.image.blocks[0](x_img_emb), img0)


def test_masked_tokens_run_through_forward_tokens():
    enc = DeepAVFusionEncoder(**SMOKE).eval()
    image, audio = _inputs()
    ids_img, ids_aud = torch.tensor([[0, 3], [2, 1]]), torch.randperm(96)[:19].expand(2, -1)
    out = enc(image, audio, image_ids_keep=ids_img, audio_ids_keep=ids_aud)
    assert out.image.shape == (2, 2, 32) and out.audio.shape == (2, 19, 32)
    x_img, x_aud = enc.embed(image, audio)
    again = enc.forward_tokens(x_img[torch.arange(2)[:, None], ids_img], x_aud[:, ids_aud[0]])
    torch.testing.assert_close(again.fusion, out.fusion)


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="fusion_arch.*'factorized'"):
        DeepAVFusionEncoder(fusion_arch="mbt", **SMOKE)
    for bad in ("mid", 5, "1-x", True):
        with pytest.raises(ValueError, match="fusion_layers"):
            DeepAVFusionEncoder(fusion_layers=bad, **SMOKE)
    enc = DeepAVFusionEncoder(**SMOKE)
    with pytest.raises(ValueError, match=r"image: expected .*\(B, 3, 32, 32\)"):
        enc(torch.randn(2, 3, 64, 64), torch.randn(2, 1, 128, 192))
    with pytest.raises(ValueError, match=r"audio: expected .*\(B, 1, 128, 192\)"):
        enc(torch.randn(2, 3, 32, 32), torch.randn(2, 1, 128, 196))
    assert parse_fusion_layers("9-10-11", 12) == [9, 10, 11] and parse_fusion_layers(11, 12) == [11]


def official_encoder_layout(depth=12, dim=768, mlp=3072, attn_ratio=0.25, fusion_mlp=768, tokens=32):
    """Key -> shape of `encoder.*` in the released checkpoints, written from spec 2.1/2.4/2.5."""
    d = int(dim * attn_ratio)
    keys = {"fusion_tokens": (1, tokens, dim)}
    for branch, chans, n in (("image", 3, 196), ("audio", 1, 96)):
        keys[f"{branch}.pos_embed"] = (1, n, dim)
        keys[f"{branch}.patch_embed.proj.weight"] = (dim, chans, 16, 16)
        keys[f"{branch}.patch_embed.proj.bias"] = (dim,)
        for i in range(depth):
            p = f"{branch}.blocks.{i}."
            keys.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                         p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
                         p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                         p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
                         p + "mlp.fc1.weight": (mlp, dim), p + "mlp.fc1.bias": (mlp,),
                         p + "mlp.fc2.weight": (dim, mlp), p + "mlp.fc2.bias": (dim,)})
        keys[f"{branch}.norm.weight"] = keys[f"{branch}.norm.bias"] = (dim,)
    for i in range(depth):
        p = f"fusion_blocks.{i}."
        for norm in ("norm1_mm", "norm1_aud", "norm1_img", "norm2"):
            keys[p + norm + ".weight"] = keys[p + norm + ".bias"] = (dim,)
        for agg in ("attn_v", "attn_a"):
            keys.update({p + f"attn.{agg}.q.weight": (dim, dim), p + f"attn.{agg}.q.bias": (dim,),
                         p + f"attn.{agg}.kv.weight": (2 * dim, dim), p + f"attn.{agg}.kv.bias": (2 * dim,),
                         p + f"attn.{agg}.proj.weight": (dim, dim), p + f"attn.{agg}.proj.bias": (dim,)})
        keys.update({p + "attn.q.weight": (d, dim), p + "attn.q.bias": (d,),
                     p + "attn.k.weight": (d, 2 * dim), p + "attn.k.bias": (d,),
                     p + "attn.v.weight": (dim, 2 * dim), p + "attn.v.bias": (dim,),
                     p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                     p + "mlp.fc1.weight": (fusion_mlp, dim), p + "mlp.fc1.bias": (fusion_mlp,),
                     p + "mlp.fc2.weight": (dim, fusion_mlp), p + "mlp.fc2.bias": (dim,)})
    keys["fusion_norm.weight"] = keys["fusion_norm.bias"] = (dim,)
    return keys


@pytest.mark.parametrize("attn_ratio,mlp_ratio", [(0.25, 1.0), (1.0, 4.0)])
def test_paper_encoder_state_dict_has_the_released_key_layout(attn_ratio, mlp_ratio):
    with torch.device("meta"):
        enc = DeepAVFusionEncoder(fusion_attn_ratio=attn_ratio, fusion_mlp_ratio=mlp_ratio)
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    expected = official_encoder_layout(attn_ratio=attn_ratio, fusion_mlp=int(768 * mlp_ratio))
    assert ours == expected
    # a sample of the names listed in spec 2.5
    for key, shape in [("fusion_tokens", (1, 32, 768)), ("image.pos_embed", (1, 196, 768)),
                       ("audio.patch_embed.proj.weight", (768, 1, 16, 16)),
                       ("image.blocks.0.attn.qkv.weight", (2304, 768)),
                       ("fusion_blocks.0.attn.attn_v.kv.weight", (1536, 768)),
                       ("fusion_blocks.0.attn.v.weight", (768, 1536)), ("fusion_norm.weight", (768,))]:
        assert ours[key] == shape
    assert ours["fusion_blocks.0.attn.k.weight"] == (int(768 * attn_ratio), 1536)
    assert not enc.image.pos_embed.requires_grad and enc.fusion_tokens.requires_grad


def test_checkpoint_with_official_layout_loads_strict(tmp_path):
    layout = official_encoder_layout(depth=2, dim=32, mlp=128, attn_ratio=0.25, fusion_mlp=32, tokens=32)
    state = {"encoder." + k: torch.randn(shape) for k, shape in layout.items()}
    state["image_decoder_pos_embed"] = torch.randn(1, 196, 16)   # other parts of AVMAE are ignored
    torch.save({"state_dict": state}, tmp_path / "release.pth")
    enc = DeepAVFusionEncoder(embed_dim=32, depth=2, num_heads=2, fusion_num_heads=2)
    load_encoder_from_checkpoint(enc, tmp_path / "release.pth")
    torch.testing.assert_close(enc.fusion_blocks[1].attn.attn_a.kv.weight,
                               state["encoder.fusion_blocks.1.attn.attn_a.kv.weight"])
    del state["encoder.fusion_norm.bias"]
    with pytest.raises(ValueError, match="missing.*fusion_norm.bias"):
        load_encoder_from_checkpoint(enc, {"state_dict": state})


def test_mae_style_checkpoint_loads_into_a_branch(tmp_path):
    donor = ViT(input_size=64, patch_size=16, in_chans=3, embed_dim=32, depth=2, num_heads=2)
    state = {k: torch.randn_like(v) for k, v in donor.state_dict().items()}
    state["pos_embed"] = torch.randn(1, 197, 32)               # another size (cls + 14x14)
    state["cls_token"] = torch.randn(1, 1, 32)
    state["mask_token"] = torch.randn(1, 1, 16)
    state["decoder_embed.weight"] = torch.randn(16, 32)
    state["decoder_blocks.0.attn.qkv.weight"] = torch.randn(48, 16)
    torch.save({"model": state}, tmp_path / "mae.pth")
    enc = DeepAVFusionEncoder(embed_dim=32, depth=2, num_heads=2, fusion_num_heads=2, image_size=(64, 64),
                              image_pretrained=str(tmp_path / "mae.pth"))
    torch.testing.assert_close(enc.image.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])
    torch.testing.assert_close(enc.image.pos_embed[0], sincos_pos_table_2d(32, (4, 4)))
    del state["norm.weight"]
    with pytest.raises(ValueError, match="missing keys.*norm.weight"):
        load_unimodal_checkpoint(enc.image, {"model": state})


def test_sincos_table_first_half_encodes_column_and_patchify_roundtrip():
    table = sincos_pos_table_2d(8, (2, 3))                      # (6, 8), row-major
    # column index in the first half: sin(col * 1) at channel 0; row index at channel 4
    torch.testing.assert_close(table[:, 0], torch.sin(torch.tensor([0., 1, 2, 0, 1, 2])))
    torch.testing.assert_close(table[:, 4], torch.sin(torch.tensor([0., 0, 0, 1, 1, 1])))
    audio = torch.randn(2, 1, 128, 192)
    patches = patchify(audio, 16)                               # (2, 96, 256)
    torch.testing.assert_close(patches[0, 12], audio[0, 0, 16:32, 0:16].reshape(-1))   # row 1 = freq band 1
    torch.testing.assert_close(unpatchify(patches, 16, (8, 12), 1), audio)
