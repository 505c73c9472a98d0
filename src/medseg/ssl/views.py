"""Random views of a batch for self-supervised pre-training, batched in torch (no torchvision).

Each view of each image gets its own draw of: a random resized crop (area ``scale``, aspect ``ratio``, by an affine
``grid_sample``), a horizontal flip, colour jitter (brightness, contrast, saturation; in a random order is not
needed at this strength, so the fixed order of SimCLR's ``ColorJitter`` parameters is kept), conversion to grey,
Gaussian blur and solarisation, each with its probability (:class:`ViewOptions`). Every draw comes from the
``torch.Generator`` passed in, so a caller that seeds it from (seed, step) gets the same views after a restart.

Shapes: images (B, C, S, S) float in [0, 1] → views (B, C, size, size) float in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medseg.ops.color import to_gray_torch


@dataclass(frozen=True)
class ViewOptions:
    """The augmentation of one view (defaults: SimSiam's / BYOL's first view, at a medical-image strength).

    Attributes:
        size: output side (``None``: the input's).
        scale: crop area as a share of the image, drawn uniformly.
        ratio: crop aspect ratio, drawn log-uniformly.
        flip_p: horizontal flip probability.
        jitter_p: probability of colour jitter with factors ``1 ± brightness`` etc.
        grey_p: probability of replacing the view by its BT.601 grey level (in every channel).
        blur_p: probability of a Gaussian blur with σ (in pixels of the output) drawn from ``blur_sigma``.
        solarize_p: probability of inverting every value above 0.5.
    """

    size: int | None = None
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    grey_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "grey_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low ≤ high ≤ 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low ≤ high, got {self.ratio}")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _happens(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def crop_grids(n: int, size: int, opts: ViewOptions, g: torch.Generator,
               regions: torch.Tensor | None = None) -> torch.Tensor:
    """(n, size, size, 2) sampling grids of random resized crops (with the flip) in ``grid_sample`` coordinates.

    ``regions``: (n, 4) boxes (x0, y0, x1, y1) as shares of the image side in [0, 1], the part of each image to crop
    from (a letterboxed image's content, without its padding); default the whole image."""
    area = _uniform(n, *opts.scale, g)
    log_r = _uniform(n, math.log(opts.ratio[0]), math.log(opts.ratio[1]), g)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop sides as shares of the image side
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=g) * (1 - w) + w / 2) * 2 - 1  # centres in [-1, 1]
    cy = (torch.rand(n, generator=g) * (1 - h) + h / 2) * 2 - 1
    flip = torch.where(_happens(n, opts.flip_p, g), -1.0, 1.0)
    if regions is not None:  # the crop relative to the region, mapped into the image
        r = regions.detach().float().cpu()
        rw, rh = (r[:, 2] - r[:, 0]).clamp(min=1e-3), (r[:, 3] - r[:, 1]).clamp(min=1e-3)
        cx = (r[:, 0] + (cx + 1) / 2 * rw) * 2 - 1
        cy = (r[:, 1] + (cy + 1) / 2 * rh) * 2 - 1
        w, h = w * rw, h * rh
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return F.affine_grid(theta, [n, 1, size, size], align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """BT.601 grey level in every channel (B, C, H, W) → same."""
    return to_gray_torch(x).to(x.dtype)[:, None].expand_as(x)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image σ (B,) (kernel radius 3σ, at most 1/4 of the side)."""
    radius = int(min(math.ceil(3 * float(sigma.max())), x.shape[-1] // 4))
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].to(x) ** 2))
    k = k / k.sum(1, keepdim=True)  # (B, K)
    b, c, hgt, wid = x.shape
    y = x.reshape(1, b * c, hgt, wid)
    kc = k.repeat_interleave(c, 0)  # (B·C, K)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kc[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kc[:, None, :, None], groups=b * c)
    return y.reshape(b, c, hgt, wid)


def random_view(images: torch.Tensor, opts: ViewOptions, g: torch.Generator,
                regions: torch.Tensor | None = None) -> torch.Tensor:
    """One random view of every image (see the module docstring).

    Args:
        images: (B, C, S, S) float in [0, 1].
        opts: the view's augmentation.
        g: a CPU generator (all draws; the result does not depend on the images' device).
        regions: optional (B, 4) boxes (x0, y0, x1, y1) in [0, 1] to crop from (see :func:`crop_grids`).

    Returns:
        (B, C, size, size) float in [0, 1].
    """
    n = images.shape[0]
    size = opts.size or images.shape[-1]
    grid = crop_grids(n, size, opts, g, regions).to(images)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    jitter = _happens(n, opts.jitter_p, g).to(x.device).view(n, 1, 1, 1)
    bright = _uniform(n, 1 - opts.brightness, 1 + opts.brightness, g).to(x).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - opts.contrast, 1 + opts.contrast, g).to(x).view(n, 1, 1, 1)
    sat = _uniform(n, 1 - opts.saturation, 1 + opts.saturation, g).to(x).view(n, 1, 1, 1)
    y = (x * bright).clamp(0, 1)
    mean = _grey(y).mean((1, 2, 3), keepdim=True)
    y = ((y - mean) * contrast + mean).clamp(0, 1)
    grey = _grey(y)
    y = ((y - grey) * sat + grey).clamp(0, 1)
    x = torch.where(jitter, y, x)
    x = torch.where(_happens(n, opts.grey_p, g).to(x.device).view(n, 1, 1, 1), _grey(x), x)
    blur = _happens(n, opts.blur_p, g).to(x.device)
    sigma = _uniform(n, *opts.blur_sigma, g)
    if bool(blur.any()):
        x = torch.where(blur.view(n, 1, 1, 1), _blur(x, sigma.to(x.device)), x)
    solar = _happens(n, opts.solarize_p, g).to(x.device).view(n, 1, 1, 1)
    x = torch.where(solar & (x > 0.5), 1 - x, x)
    return x.contiguous()
