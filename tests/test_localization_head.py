"""Cosine localization head: the map is the cosine of mean audio with each visual token, upsampled."""
import torch
import torch.nn.functional as F

from avfusion.models.localization_head import CosineLocalizationHead, localization_loss


def test_similarity_is_cosine_with_mean_pooled_audio():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 12, 8, generator=gen)
    audio = torch.randn(2, 5, 8, generator=gen)
    cos = CosineLocalizationHead.similarity(image, audio, (3, 4))
    assert cos.shape == (2, 3, 4)
    expected = F.cosine_similarity(image, audio.mean(1, keepdim=True), dim=-1).view(2, 3, 4)
    torch.testing.assert_close(cos, expected)
    # a token parallel to the mean audio vector scores 1 and is the argmax
    image[0, 7] = audio[0].mean(0) * 3
    cos = CosineLocalizationHead.similarity(image, audio, (3, 4))
    assert cos[0].flatten().argmax() == 7 and abs(float(cos[0, 1, 3]) - 1.0) < 1e-6


def test_logits_upsampled_to_image_size_and_bce_trains_scale():
    head = CosineLocalizationHead(init_scale=1.0)
    image, audio = torch.randn(2, 16, 8), torch.randn(2, 6, 8)
    logits = head(image, audio, image_grid=(4, 4), out_size=(64, 64))
    assert logits.shape == (2, 64, 64)
    gt = (head.similarity(image, audio, (4, 4)) > 0).float()  # target agrees with the similarity sign
    gt = F.interpolate(gt[:, None], size=(64, 64), mode="nearest")[:, 0]
    opt = torch.optim.SGD(head.parameters(), lr=1.0)
    first = None
    for _ in range(20):
        loss = localization_loss(head(image, audio, (4, 4), (64, 64)), gt)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad(); loss.backward(); opt.step()
    assert float(loss.detach()) < first and head.logit_scale.item() > 1.0
