"""Edge operators: Kirsch, Sobel, Prewitt, Scharr, Laplacian — one implementation for NumPy and torch.

Every operator is written with array slicing and arithmetic only, so the same code runs on a NumPy array
(CPU) and on a torch tensor (CPU or GPU, batched) and gives the same numbers.

Kirsch uses an exact identity instead of eight 3×3 convolutions. With the eight ring neighbours
``n_0..n_7`` (clockwise from north), compass mask ``k`` weighs three consecutive neighbours by +5 and the
other five by −3, so its response is ``r_k = 8·S3_k − 3·S8`` with ``S3_k = n_k + n_{k+1} + n_{k+2}`` and
``S8 = Σ n_i``. The magnitude ``max_k r_k`` therefore costs ~25 array additions instead of 72 multiply-adds.
Because the eight responses sum to zero, ``max_k r_k ≥ 0``: the CMMC code's clipping at 0 is a no-op.

Conventions (chosen for medseg; where they differ from the CMMC code, see ``docs``/README):

* colour images are filtered **per channel** (CMMC's code ran over image rows by mistake);
* borders use **replicate** padding (CMMC: zero padding, which invents strong edges along the image
  border); ``padding="zero"`` reproduces CMMC;
* the result is min-max normalised **per image** (over all channels jointly, preserving colour ratios) to
  uint8 with truncation, as CMMC did; for integer inputs the normalisation is computed exactly
  (``floor((r − min)·255 / (max − min))``), so NumPy and torch agree bit for bit. An all-zero response
  (constant image) stays 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

EdgeOperatorName = Literal["kirsch", "sobel", "prewitt", "scharr", "laplacian"]
Padding = Literal["replicate", "reflect", "zero"]
Normalize = Literal["image", "channel", "none"]

# Float magnitudes are truncated to uint8 after adding this, so that e.g. the maximum (r = hi) maps to 255
# although (hi − lo)·255/(hi − lo) may evaluate to 254.99999….
_FLOOR_EPS = 1e-6

EDGE_OPERATORS: tuple[str, ...] = ("kirsch", "sobel", "prewitt", "scharr", "laplacian")

# Ring neighbours clockwise from north: (dy, dx).
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
# Smoothing weights (outer, centre) of the derivative operators.
_DERIVATIVE_WEIGHTS = {"sobel": (1, 2), "prewitt": (1, 1), "scharr": (3, 10)}


def kirsch_kernels() -> np.ndarray:
    """The eight Kirsch compass masks (correlation form), shape (8, 3, 3), int64.

    Mask ``k`` has +5 on ring positions ``k, k+1, k+2`` (clockwise from north), −3 elsewhere, 0 centre.
    """
    kernels = np.zeros((8, 3, 3), dtype=np.int64)
    for k in range(8):
        for i, (dy, dx) in enumerate(_RING):
            kernels[k, 1 + dy, 1 + dx] = 5 if (i - k) % 8 < 3 else -3
    return kernels


def _neighbour(padded: Any, dy: int, dx: int) -> Any:
    """View of the padded array shifted by (dy, dx); last two axes are (H+2, W+2)."""
    h, w = padded.shape[-2] - 2, padded.shape[-1] - 2
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _kirsch(padded: Any, maximum: Callable[[Any, Any], Any]) -> Any:
    n = [_neighbour(padded, dy, dx) for dy, dx in _RING]
    pairs = [n[k] + n[(k + 1) % 8] for k in range(8)]
    s8 = pairs[0] + pairs[2] + pairs[4] + pairs[6]
    best = pairs[0] + n[2]
    for k in range(1, 8):
        best = maximum(best, pairs[k] + n[(k + 2) % 8])
    return 8 * best - 3 * s8


def _derivative(padded: Any, weights: tuple[int, int], sqrt: Callable[[Any], Any]) -> Any:
    outer, centre = weights
    nb = {(dy, dx): _neighbour(padded, dy, dx) for dy, dx in _RING}
    gx = outer * (nb[(-1, 1)] - nb[(-1, -1)] + nb[(1, 1)] - nb[(1, -1)]) + centre * (nb[(0, 1)] - nb[(0, -1)])
    gy = outer * (nb[(1, -1)] - nb[(-1, -1)] + nb[(1, 1)] - nb[(-1, 1)]) + centre * (nb[(1, 0)] - nb[(-1, 0)])
    return sqrt(gx * gx + gy * gy)


def _laplacian(padded: Any, absolute: Callable[[Any], Any]) -> Any:
    c = _neighbour(padded, 0, 0)
    lap = _neighbour(padded, -1, 0) + _neighbour(padded, 1, 0) + _neighbour(padded, 0, -1) + _neighbour(padded, 0, 1)
    return absolute(lap - 4 * c)


def _response(padded: Any, operator: str, *, maximum: Callable, sqrt: Callable, absolute: Callable) -> Any:
    if operator == "kirsch":
        return _kirsch(padded, maximum)
    if operator in _DERIVATIVE_WEIGHTS:
        return _derivative(padded, _DERIVATIVE_WEIGHTS[operator], sqrt)
    if operator == "laplacian":
        return _laplacian(padded, absolute)
    raise ValueError(f"unknown edge operator {operator!r}; choose one of {', '.join(EDGE_OPERATORS)}")


def _check_args(operator: str, padding: str, normalize: str) -> None:
    if operator not in EDGE_OPERATORS:
        raise ValueError(f"unknown edge operator {operator!r}; choose one of {', '.join(EDGE_OPERATORS)}")
    if padding not in ("replicate", "reflect", "zero"):
        raise ValueError(f"unknown padding {padding!r}; choose replicate, reflect or zero")
    if normalize not in ("image", "channel", "none"):
        raise ValueError(f"unknown normalize {normalize!r}; choose image, channel or none")


def _blocked(padded: Any, out: Any, operator: str, target: int, **fns: Callable) -> Any:
    """Evaluate the operator block by block so that every temporary stays in cache.

    ``padded`` is (N, H+2, W+2), ``out`` is (N, H, W). Blocks hold about ``target`` output pixels: several
    whole planes when planes are small, row bands of one plane when they are large. The operators only
    read a 1-pixel halo, so blocks need no overlap handling beyond slicing two extra padded rows.
    """
    n, h, w = out.shape
    if h * w >= target:
        rows = max(1, target // w)
        for i in range(n):
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                out[i : i + 1, r0:r1] = _response(padded[i : i + 1, r0 : r1 + 2], operator, **fns)
    else:
        step = max(1, target // (h * w))
        for i in range(0, n, step):
            out[i : i + step] = _response(padded[i : i + step], operator, **fns)
    return out


def _work_dtype_is_integer(integer_input: bool, itemsize: int, operator: str) -> bool:
    """Kirsch/Laplacian of ≤16-bit integers are computed exactly in integers (int16 for 8-bit input)."""
    return integer_input and itemsize <= 2 and operator in ("kirsch", "laplacian")


# ----------------------------------------------------------------------------------------------- NumPy


def edge_filter_numpy(
    image: np.ndarray,
    operator: EdgeOperatorName = "kirsch",
    *,
    padding: Padding = "replicate",
    normalize: Normalize = "image",
) -> np.ndarray:
    """Edge magnitude of one image with NumPy.

    Args:
        image: (H, W) or (H, W, C) array, any real dtype (8/16-bit integers take an exact integer path).
        operator: ``kirsch`` (max of 8 compass masks), ``sobel``/``prewitt``/``scharr`` (gradient
            magnitude), ``laplacian`` (|4-neighbour Laplacian|).
        padding: border handling — ``replicate`` (default), ``reflect`` or ``zero`` (CMMC code).
        normalize: ``image`` — min-max over the whole image to uint8 (default); ``channel`` — per
            channel; ``none`` — return the raw magnitude (integer for the exact path, else float64).

    Returns:
        Same shape as ``image``; uint8 unless ``normalize="none"``.
    """
    _check_args(operator, padding, normalize)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    integer = np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool
    if _work_dtype_is_integer(integer, arr.dtype.itemsize, operator):
        dtype = np.int16 if arr.dtype.itemsize == 1 else np.int32  # 8·765, 3·2040 fit int16; 16-bit: int32
    else:
        dtype = np.float64
    mode = {"replicate": "edge", "reflect": "reflect", "zero": "constant"}[padding]
    padded = np.pad(chw.astype(dtype), ((0, 0), (1, 1), (1, 1)), mode=mode)
    resp = _blocked(padded, np.empty(chw.shape, dtype), operator, 1 << 15,
                    maximum=np.maximum, sqrt=np.sqrt, absolute=np.abs)
    if normalize != "none":
        resp = _minmax_uint8_numpy(resp, per_channel=normalize == "channel")
    return resp[0] if arr.ndim == 2 else np.moveaxis(resp, 0, -1)


def _minmax_uint8_numpy(resp: np.ndarray, per_channel: bool) -> np.ndarray:
    axes = (1, 2) if per_channel else (0, 1, 2)
    lo = resp.min(axis=axes, keepdims=True)
    hi = resp.max(axis=axes, keepdims=True)
    if np.issubdtype(resp.dtype, np.integer):
        span = np.maximum(hi.astype(np.int64) - lo, 1)
        return ((resp.astype(np.int64) - lo) * 255 // span).astype(np.uint8)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.minimum(np.floor((resp - lo) * 255.0 / span + _FLOOR_EPS), 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- torch


def _pad_torch(x: torch.Tensor, padding: str, dtype: torch.dtype) -> torch.Tensor:
    """1-pixel padding of the last two axes, converting to ``dtype`` in the same copy (``F.pad`` has no
    integer replicate/reflect)."""
    out = torch.zeros(*x.shape[:-2], x.shape[-2] + 2, x.shape[-1] + 2, dtype=dtype, device=x.device)
    out[..., 1:-1, 1:-1] = x
    if padding == "zero":
        return out
    h, w = x.shape[-2:]
    top, bottom = (1, h) if padding == "replicate" or h == 1 else (2, h - 1)
    out[..., 0, :] = out[..., top, :]
    out[..., -1, :] = out[..., bottom, :]
    left, right = (1, w) if padding == "replicate" or w == 1 else (2, w - 1)
    out[..., :, 0] = out[..., :, left]
    out[..., :, -1] = out[..., :, right]
    return out


def _normalise_torch(resp: torch.Tensor, dims: tuple[int, ...], exact: bool) -> torch.Tensor:
    lo = resp.amin(dim=dims, keepdim=True)
    hi = resp.amax(dim=dims, keepdim=True)
    if exact and resp.dtype == torch.int16:
        # (r − lo)·255 and span are integers < 2^24 and span ≤ 12240, so the correctly rounded float32
        # quotient never crosses an integer: floor() equals exact integer floor division.
        span = (hi - lo).float().clamp_min_(1)
        return torch.floor(((resp - lo).float() * 255.0).div_(span)).to(torch.uint8)
    if exact:
        span = (hi.long() - lo.long()).clamp_min(1)
        return ((resp.long() - lo.long()) * 255).div_(span, rounding_mode="floor").to(torch.uint8)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi)).double()
    out = torch.floor((resp.double() - lo.double()) * 255.0 / span + _FLOOR_EPS)
    return out.clamp_(0, 255).to(torch.uint8)


def edge_filter_torch(
    images: torch.Tensor,
    operator: EdgeOperatorName = "kirsch",
    *,
    padding: Padding = "replicate",
    normalize: Normalize = "image",
) -> torch.Tensor:
    """Batched edge magnitude with torch (CPU or GPU); same numbers as :func:`edge_filter_numpy`.

    Args:
        images: (B, C, H, W) tensor, any real dtype. 8/16-bit integer inputs take the exact integer path
            (Kirsch, Laplacian), so the uint8 result matches the NumPy path bit for bit.
        operator, padding, normalize: as in :func:`edge_filter_numpy`.

    Returns:
        (B, C, H, W) uint8 tensor on the input's device (the raw magnitude if ``normalize="none"``).
    """
    _check_args(operator, padding, normalize)
    if images.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    integer = not images.dtype.is_floating_point
    exact = _work_dtype_is_integer(integer, images.element_size(), operator)
    if exact:
        dtype = torch.int16 if images.element_size() == 1 else torch.int32
    else:
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    padded = _pad_torch(images.reshape(b * c, h, w), padding, dtype)
    fns = {"maximum": torch.maximum, "sqrt": torch.sqrt, "absolute": torch.abs}
    if images.device.type == "cpu":  # cache-sized blocks; on a GPU one launch over everything is faster
        resp = _blocked(padded, torch.empty(b * c, h, w, dtype=dtype), operator, 1 << 16, **fns)
    else:
        resp = _response(padded, operator, **fns)
    resp = resp.reshape(b, c, h, w)
    if normalize == "none":
        return resp
    dims = (2, 3) if normalize == "channel" else (1, 2, 3)
    if images.device.type != "cpu":
        return _normalise_torch(resp, dims, exact)
    out = torch.empty(b, c, h, w, dtype=torch.uint8)
    for i in range(b):  # image by image: the temporaries stay in cache
        out[i : i + 1] = _normalise_torch(resp[i : i + 1], dims, exact)
    return out


def edge_filter(
    image: np.ndarray | torch.Tensor,
    operator: EdgeOperatorName = "kirsch",
    *,
    padding: Padding = "replicate",
    normalize: Normalize = "image",
) -> np.ndarray | torch.Tensor:
    """Dispatch to :func:`edge_filter_numpy` (arrays, (H, W[, C])) or :func:`edge_filter_torch` (tensors,
    (B, C, H, W))."""
    if isinstance(image, torch.Tensor):
        return edge_filter_torch(image, operator, padding=padding, normalize=normalize)
    return edge_filter_numpy(image, operator, padding=padding, normalize=normalize)


def kirsch(image: np.ndarray | torch.Tensor, **kwargs: Any) -> np.ndarray | torch.Tensor:
    """Kirsch edge enhancement (CMMC pre-processing); see :func:`edge_filter`."""
    return edge_filter(image, "kirsch", **kwargs)


class EdgeFilter:
    """Composable transform (MONAI style): ``EdgeFilter("kirsch")(image)``.

    Args:
        operator: one of :data:`EDGE_OPERATORS`.
        padding: ``replicate`` | ``reflect`` | ``zero``.
        normalize: ``image`` | ``channel`` | ``none``.

    Shape:
        NumPy (H, W) or (H, W, C) → same; torch (B, C, H, W) → same. uint8 unless ``normalize="none"``.
    """

    def __init__(self, operator: EdgeOperatorName = "kirsch", *, padding: Padding = "replicate",
                 normalize: Normalize = "image") -> None:
        _check_args(operator, padding, normalize)
        self.operator = operator
        self.padding = padding
        self.normalize = normalize

    def __call__(self, image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        return edge_filter(image, self.operator, padding=self.padding, normalize=self.normalize)

    def __repr__(self) -> str:
        return f"EdgeFilter(operator={self.operator!r}, padding={self.padding!r}, normalize={self.normalize!r})"
