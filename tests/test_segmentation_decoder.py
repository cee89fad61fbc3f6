"""AVSegmDecoder: the official size at ViT-B, logits at image size for the paper, tiny and smoke grids."""
import pytest
import torch

from avfusion.models.segmentation_decoder import AVSegmDecoder, segmentation_layer_ids


def test_vitb_decoder_has_official_parameter_count_and_layers():
    with torch.device("meta"):
        dec = AVSegmDecoder(embed_dim=768, num_classes=71)
    assert sum(p.numel() for p in dec.parameters()) == 37_875_911  # spec 4.5: 37.9 M (C = 71)
    assert segmentation_layer_ids(12) == [0, 3, 7, 11]
    assert segmentation_layer_ids(4) == [0, 1, 2, 3]


@pytest.mark.parametrize("grid,size,depth,dim,width,classes", [
    ((14, 14), 224, 2, 32, None, 1),     # paper grid
    ((7, 7), 112, 4, 64, 64, 71),         # tiny
    ((4, 4), 64, 2, 64, 32, 1),           # smoke
    ((5, 5), 96, 2, 32, None, 3),         # patch 16 would give 80: resized to the image
])
def test_logits_at_image_size_for_any_grid(grid, size, depth, dim, width, classes):
    torch.set_num_threads(1)
    dec = AVSegmDecoder(embed_dim=dim, num_classes=classes, width=width, min_width=16)
    n_img = grid[0] * grid[1]
    layers = [(torch.randn(2, n_img, dim, requires_grad=True), torch.randn(2, 96, dim, requires_grad=True),
               torch.randn(2, 4, dim)) for _ in range(depth)]
    logits = dec(layers, image_grid=grid, out_size=(size, size))
    assert logits.shape == (2, classes, size, size)
    logits.mean().backward()
    for i in segmentation_layer_ids(depth):
        assert layers[i][0].grad.abs().sum() > 0
    assert layers[-1][1].grad.abs().sum() > 0  # global audio vector from the last layer


def test_audio_changes_the_segmentation():
    dec = AVSegmDecoder(embed_dim=32, num_classes=1, min_width=16).eval()
    layers = [(torch.randn(1, 16, 32), torch.randn(1, 96, 32), None) for _ in range(2)]
    other = [(img, torch.randn_like(aud), fus) for img, aud, fus in layers]
    assert not torch.allclose(dec(layers, (4, 4), (64, 64)), dec(other, (4, 4), (64, 64)))
