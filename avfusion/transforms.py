"""Image (and image+mask) transforms of the official code, in torch only (spec 1.2).

train: RandomResizedCrop(S, scale (0.5, 1), ratio (3/4, 4/3), bilinear) + HFlip(0.5) + Normalize
eval:  Resize(short side int(S / 0.875)) + CenterCrop(S) + Normalize
Segmentation / localization maps follow the image geometry with NEAREST interpolation; their eval
resize is Resize(S) + CenterCrop(S) as in the official joint transforms.

    image = eval_image(frame_uint8_hwc, 112)                      # (3, 112, 112) normalised
    image, mask = train_image_mask(frame, mask, 112, generator)   # mask (112, 112), same crop and flip
Randomness comes from the `generator` given (or torch's global RNG, which DataLoader seeds per worker).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875


def to_tensor(frame: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `(H, W, 3)` -> float `(3, H, W)` in [0, 1]."""
    x = torch.from_numpy(np.require(frame, requirements=["C", "W"])) if isinstance(frame, np.ndarray) else frame
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {tuple(x.shape)}")
    return x.permute(2, 0, 1).float().div_(255.0)  # (3, H, W)


_MEAN, _STD = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(image - mean) / std per channel (a new tensor; one allocation)."""
    mean, std = (_MEAN, _STD) if image.dtype == torch.float32 else (_MEAN.to(image), _STD.to(image))
    return image.sub(mean).div_(std)


def resize(x: torch.Tensor, size: tuple[int, int], nearest: bool = False) -> torch.Tensor:
    """`(C, H, W)` -> `(C, h, w)`; bilinear with antialiasing (as PIL) or nearest for label maps."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if nearest:
        out = F.interpolate(x[None].float(), size=size, mode="nearest-exact")[0]
        return out.to(x.dtype)
    # uint8 input: torch's uint8 kernel (as PIL: fixed-point weights, rounded to uint8); the kernel F.interpolate
    # calls for these arguments, without its ~50 us of argument checks per call (same numbers)
    if _BILINEAR_AA is not None:
        x = x[None]
        if x.dtype == torch.uint8 and x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last):
            # a crop of a channels-last frame: torch's vectorised uint8 kernel takes only a channels-last contiguous
            # input (else a generic one: same numbers, asserted in tests/test_datasets.py); the copy costs less
            # than it saves (a 256-pixel train crop on 4 channels 0.28 -> 0.14 ms, 720p on 3 0.61 -> 0.50 ms)
            x = x.contiguous(memory_format=torch.channels_last)
        return _BILINEAR_AA(x, tuple(size), False, None)[0]
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


_BILINEAR_AA = getattr(torch._C._nn, "_upsample_bilinear2d_aa", None)


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision Resize(int): the short side becomes `short`, the long side keeps the aspect."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def center_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner of a centred size x size crop (torchvision's rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def random_resized_crop_box(height: int, width: int, generator: torch.Generator | None = None,
                            scale=CROP_SCALE, ratio=CROP_RATIO) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=generator).item())
        log_r = log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand((), generator=generator).item()
        aspect = math.exp(log_r)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            j = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return i, j, h, w
    in_ratio = width / height  # fallback: central crop
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad `(C, H, W)` so both sides are at least `size` (torchvision CenterCrop does the same)."""
    ph, pw = max(0, size - x.shape[-2]), max(0, size - x.shape[-1])
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x


def _eval_geometry(x: torch.Tensor, size: int, short: int, nearest: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    x = _pad_to(resize(x, short_side_size(h, w, short), nearest), size)
    top, left = center_crop_box(x.shape[-2], x.shape[-1], size)
    return x[..., top:top + size, left:left + size]  # (C, size, size)


def _train_geometry(xs: list[tuple[torch.Tensor, bool]], size: int, generator) -> list[torch.Tensor]:
    h, w = xs[0][0].shape[-2:]
    top, left, ch, cw = random_resized_crop_box(h, w, generator)
    flip = bool(torch.rand((), generator=generator).item() < 0.5)
    out = []
    for x, nearest in xs:
        y = resize(x[..., top:top + ch, left:left + cw], (size, size), nearest)  # (C, size, size)
        out.append(torch.flip(y, dims=(-1,)) if flip else y)
    return out


def _uint8_chw(frame: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `(H, W, 3)` -> uint8 `(3, H, W)` view (channels-last strides, no copy of a writable array)."""
    x = torch.from_numpy(np.require(frame, requirements=["W"])) if isinstance(frame, np.ndarray) else frame
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {tuple(x.shape)}")
    return x.permute(2, 0, 1)


def _rgbx(frame) -> torch.Tensor | None:
    """`(4, H, W)` uint8 channels-last tensor of the `(H, W, 4)` array that `frame` is the RGB view of
    (a prepared JPEG frame, `prepared._decode_jpeg_rgbx`), else None. torch's uint8 resize works on 4
    channels natively (3 are padded to 4 and back), so the geometry runs on the 4 and channel 3 is dropped
    after it: the same RGB numbers."""
    base = frame.base if isinstance(frame, np.ndarray) else None
    if (isinstance(base, np.ndarray) and base.dtype == np.uint8 and base.ndim == 3 and base.shape[2] == 4
            and frame.shape == base.shape[:2] + (3,) and base.flags.c_contiguous and base.flags.writeable
            and frame.ctypes.data == base.ctypes.data and frame.strides == base.strides):
        return torch.from_numpy(base).permute(2, 0, 1)
    return None


def _float_image(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _normalized(x: torch.Tensor) -> torch.Tensor:
    """`normalize(_float_image(x))`, in place on the new float tensor of a uint8 `x` (the same operations
    and numbers, one allocation fewer)."""
    if x.dtype != torch.uint8:
        return normalize(x)
    return normalize_uint8(x)


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images `(..., 3, H, W)` -> float32 `(x / 255 - mean) / std`, on `x`'s device: the one copy of the
    operations that `train_image` / `eval_image` apply to a uint8 crop, so an image normalised later (a batch
    of `normalized=False` items, on the GPU) has the same numbers bit for bit."""
    # contiguous in uint8 first (the resize gives channels last): the float tensor and the item stay contiguous,
    # and the elementwise ops below run fastest on it
    mean, std = (_MEAN, _STD) if x.device.type == "cpu" else (_MEAN.to(x.device), _STD.to(x.device))
    return x.contiguous().float().div_(255.0).sub_(mean).div_(std)


def normalize_batch_images(batch):
    """A collated batch (dict) whose "image" is uint8 (items made with `data.train_image_dtype: uint8`) -> the
    same batch with that image normalised (`normalize_uint8`); any other batch unchanged. The engine calls it
    once per training step, after the batch reached the device: 1/4 of the image bytes cross the DataLoader's
    shared memory and the host-to-device copy (as DALI and FFCV normalise on the device)."""
    if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor) and batch["image"].dtype == torch.uint8:
        return {**batch, "image": normalize_uint8(batch["image"])}
    return batch


def _finish(image: torch.Tensor, normalized: bool) -> torch.Tensor:
    if normalized:
        return _normalized(image)
    if image.dtype != torch.uint8:
        raise ValueError(f"normalized=False needs a uint8 frame (the image stays uint8), got {image.dtype}")
    return image.contiguous()  # (3, size, size) uint8: `normalize_uint8` later gives the normalised numbers


def eval_image(frame: np.ndarray, size: int, short: int | None = None, normalized: bool = True) -> torch.Tensor:
    """Resize(short, default int(size / 0.875)) + CenterCrop(size) + Normalize -> `(3, size, size)`.

    A uint8 frame is resized in uint8 (torchvision's resize of a PIL image, the official transforms, works
    in uint8 too): within 1 grey level of a float resize, and 4-8x cheaper on a 720p frame; only the
    crop is converted to float. `normalized=False`: the uint8 crop, for `normalize_uint8` later."""
    short = int(size / EVAL_CROP_FRACTION) if short is None else short
    x = _rgbx(frame)
    if x is None:
        x = _uint8_chw(frame) if _is_uint8(frame) else to_tensor(frame)
    return _finish(_eval_geometry(x, size, short, nearest=False)[:3], normalized)


def train_image(frame: np.ndarray, size: int, generator: torch.Generator | None = None,
                normalized: bool = True) -> torch.Tensor:
    """RandomResizedCrop(size, (0.5, 1)) + HFlip + Normalize -> `(3, size, size)`.

    A uint8 frame is cropped and resized in uint8, as `eval_image`; only the (size, size) result is
    converted to float. `normalized=False`: the uint8 crop, for `normalize_uint8` later."""
    x = _rgbx(frame)
    if x is None:
        x = _uint8_chw(frame) if _is_uint8(frame) else to_tensor(frame)
    (image,) = _train_geometry([(x, False)], size, generator)
    return _finish(image[:3], normalized)


def _is_uint8(frame) -> bool:
    return frame.dtype == np.uint8 if isinstance(frame, np.ndarray) else frame.dtype == torch.uint8


def _mask_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    m = torch.from_numpy(np.require(mask, requirements=["C", "W"])) if isinstance(mask, np.ndarray) else mask
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {tuple(m.shape)}")
    return m[None]  # (1, H, W)


def _check_same_size(frame, mask) -> None:
    if tuple(frame.shape[:2]) != tuple(mask.shape[-2:]):
        raise ValueError(f"frame {tuple(frame.shape[:2])} and map {tuple(mask.shape[-2:])} differ in size")


def eval_image_mask(frame: np.ndarray, mask, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint eval transform: Resize(size) + CenterCrop(size); the map (any dtype) uses NEAREST."""
    _check_same_size(frame, mask)
    image = normalize(_eval_geometry(to_tensor(frame), size, size, nearest=False))
    out = _eval_geometry(_mask_tensor(mask), size, size, nearest=True)[0]  # (size, size)
    return image, out


def train_image_mask(frame: np.ndarray, mask, size: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint train transform: the same RandomResizedCrop and flip for the frame and the map."""
    _check_same_size(frame, mask)
    image, out = _train_geometry([(to_tensor(frame), False), (_mask_tensor(mask), True)], size, generator)
    return normalize(image), out[0]
