"""The paper's augmentations, every random draw from an explicit ``torch.Generator``.

A caller that seeds the generator from ``(seed, epoch, step)`` (or, per image, from
``(seed, epoch, position)``) gets the same augmented views after a mid-epoch resume.

- CIFAR-10: horizontal flips + random 32x32 crops of the image padded by 2 pixels,
  batched on the images' device (:func:`draw_flip_crop`, :func:`flip_crop`);
- ImageNet: random-resized crops + horizontal flips of a PIL image
  (:func:`random_resized_crop_flip`); evaluation: resize then central crop
  (:func:`center_crop`);
- Exemplar's extras, batched on the images' device: :func:`color_jitter` and
  :func:`small_rotation`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

CIFAR_PAD = 2
#: torchvision's RandomResizedCrop defaults (Inception-style crops).
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
#: ImageNet convention: resize to 256 then crop 224 (the same ratio for other sizes).
RESIZE_RATIO = 256 / 224


def draw_flip_crop(n: int, generator: torch.Generator, pad: int = CIFAR_PAD) -> torch.Tensor:
    """``(n, 3)`` int64 parameters for :func:`flip_crop`: flip (0/1), row and column offsets in ``0..2*pad``."""
    flips = torch.randint(0, 2, (n, 1), generator=generator)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    return torch.cat([flips, offsets], dim=1)


def flip_crop(images: torch.Tensor, params: torch.Tensor, fill: torch.Tensor | float = 0.0,
              pad: int = CIFAR_PAD) -> torch.Tensor:
    """Flip and crop a batch ``(B, C, H, W)`` with ``params`` from :func:`draw_flip_crop`.

    The image is padded by ``pad`` pixels of value ``fill`` (a scalar or one value per
    channel: the normalised black, as torchvision pads before normalising) and the
    ``H x W`` window at the offsets is kept; all on the images' device, no loop.
    """
    b, c, h, w = images.shape
    params = params.to(images.device)
    flipped = torch.where(params[:, 0].bool().view(b, 1, 1, 1), images.flip(3), images)
    padded = F.pad(flipped, (pad, pad, pad, pad))
    if not isinstance(fill, (int, float)) or fill != 0:
        border = torch.ones(1, 1, h, w, device=images.device, dtype=images.dtype)
        border = 1 - F.pad(border, (pad, pad, pad, pad))
        padded = padded + border * torch.as_tensor(fill, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    rows = (params[:, 1:2] + torch.arange(h, device=images.device)).view(b, 1, h, 1)
    cols = (params[:, 2:3] + torch.arange(w, device=images.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def random_resized_crop_box(width: int, height: int, generator: torch.Generator,
                            scale: tuple[float, float] = CROP_SCALE,
                            ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random-resized crop: torchvision's algorithm
    (10 tries of area and log-uniform aspect ratio, then a central fallback) on ``generator``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop_flip(image: Image.Image, size: int, generator: torch.Generator) -> Image.Image:
    """ImageNet training view: a random-resized crop to ``size x size``, flipped with probability 1/2."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    top, left, h, w = random_resized_crop_box(image.width, image.height, generator)
    view = TF.resized_crop(image, top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR,
                           antialias=True)
    return TF.hflip(view) if bool(torch.randint(0, 2, (1,), generator=generator)) else view


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Evaluation view: shorter side resized to ``size * 256 / 224``, then the central ``size x size``."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    resized = TF.resize(image, [int(round(size * RESIZE_RATIO))], interpolation=InterpolationMode.BILINEAR,
                        antialias=True)
    return TF.center_crop(resized, [size, size])


def color_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """Exemplar's colour augmentation of a batch: per image, brightness shift, contrast and
    (for 3 channels) per-channel saturation-like scaling, each by up to ``strength``.

    ``generator`` must live on the images' device.
    """
    n, channels = images.shape[:2]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1

    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    views = (images - mean) * (1 + strength * uniform(n, 1, 1, 1)) + mean + strength * uniform(n, 1, 1, 1)
    if channels == 3:
        views = views * (1 + strength / 2 * uniform(n, 3, 1, 1))
    return views


def small_rotation(images: torch.Tensor, generator: torch.Generator, max_degrees: float = 20.0) -> torch.Tensor:
    """Exemplar's small rotations: every image of the batch rotated by a uniform angle in
    ``[-max_degrees, max_degrees]`` about its centre (bilinear, zero outside).

    ``generator`` must live on the images' device.
    """
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1) \
        * math.radians(max_degrees)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
