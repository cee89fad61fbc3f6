"""AVSrcSepUNet: the official size and layer wiring at ViT-B, mel-grid logits for any depth/width/grid."""
import pytest
import torch

from avfusion.models.separation_unet import AVSrcSepUNet, separation_layer_ids


def fake_layers(depth, batch, n_img, n_aud, dim, requires_grad=False):
    return [(torch.randn(batch, n_img, dim, requires_grad=requires_grad),
             torch.randn(batch, n_aud, dim, requires_grad=requires_grad),
             torch.randn(batch, 4, dim)) for _ in range(depth)]


def test_vitb_decoder_has_official_parameter_count_and_layers():
    with torch.device("meta"):
        unet = AVSrcSepUNet(embed_dim=768)
    assert sum(p.numel() for p in unet.parameters()) == 46_926_241  # spec 4.3: 46.93 M
    assert separation_layer_ids(12) == [11, 8, 5, 2, 0]
    assert separation_layer_ids(2) == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("depth,dim,width,grid", [(2, 64, None, (8, 12)), (4, 192, 64, (8, 12)), (2, 32, 32, (4, 6))])
def test_logits_on_mel_grid_and_gradient_reaches_used_layers(depth, dim, width, grid):
    torch.set_num_threads(1)
    unet = AVSrcSepUNet(embed_dim=dim, width=width)
    layers = fake_layers(depth, 2, 16, grid[0] * grid[1], dim, requires_grad=True)
    logits = unet(layers, audio_grid=grid)
    assert logits.shape == (2, 1, 128, 192)
    logits.mean().backward()
    used = set(separation_layer_ids(depth))
    for i, (img, aud, _) in enumerate(layers):
        assert (aud.grad is not None and aud.grad.abs().sum() > 0) == (i in used)
    assert layers[-1][0].grad.abs().sum() > 0  # the visual condition: last layer's image tokens
    assert all(layers[i][0].grad is None for i in range(depth - 1))


def test_visual_condition_changes_the_mask():
    unet = AVSrcSepUNet(embed_dim=32).eval()
    layers = fake_layers(2, 1, 16, 96, 32)
    other = [(torch.randn_like(img), aud, fus) for img, aud, fus in layers]
    assert not torch.allclose(unet(layers, (8, 12)), unet(other, (8, 12)))


def test_width_must_divide_into_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        AVSrcSepUNet(embed_dim=64, width=40)
