"""Weight selection: initialise a smaller network from a larger one of the same family (Xu et al., "Initializing
Models with Larger Ones", ICLR 2024).

Every tensor of the small model takes the leading elements of the large model's tensor of the same name along
each dimension ("consistent" selection: the same channel indices in every layer, so the selected channels still
feed each other), and a stage with fewer blocks takes the large stage's first blocks (first-N layer selection,
which the paper found best). Attention layers (modules with ``num_heads``, ``key_dim``, ``qkv`` and ``proj``, as
TinyViT's) are cut head-wise: the first heads, and in each head the first channels of its query, key and value, so
that a head of the small model is a head of the large one even when the head widths differ.

Used by ``lite_medsam_student(encoder_init="weight_selection")``: the distilled CMMC / ESP-MedSAM encoder starts
from LiteMedSAM's own encoder cut to half width and depth instead of from random weights (the CMMC authors start
their student from pretrained EfficientViT-SAM weights, which cannot be fetched here).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def select_weights(small: nn.Module, large_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict for ``small`` cut from ``large_state`` (leading elements along every dimension).

    Args:
        small: the model to initialise; its tensor names must exist in ``large_state`` (fewer blocks per stage is
            fine: their names are a prefix of the large model's).
        large_state: the larger model's state dict (same module tree, each dimension ≥ the small one's).

    Returns:
        name → tensor for every parameter and buffer of ``small`` (dtype and device of ``small``).

    Raises:
        ValueError: a name is missing from ``large_state``, a rank differs, or a dimension of ``small`` is larger.
    """
    out: dict[str, torch.Tensor] = {}
    heads = {f"{n}." if n else "": m for n, m in small.named_modules()
             if all(hasattr(m, a) for a in ("num_heads", "key_dim", "qkv", "proj"))}
    for name, mine in small.state_dict().items():
        if name not in large_state:
            raise ValueError(f"weight selection: {name!r} has no counterpart in the larger model")
        big = large_state[name]
        if big.dim() != mine.dim() or any(s > b for s, b in zip(mine.shape, big.shape, strict=True)):
            raise ValueError(f"weight selection: {name!r} is {tuple(mine.shape)} in the small model and "
                             f"{tuple(big.shape)} in the large one; each dimension must fit")
        owner = next((p for p in heads if name.startswith(p)), None)
        if owner is not None and name[len(owner):] in _HEAD_WISE:
            big = _HEAD_WISE[name[len(owner):]](big, large_state, owner, heads[owner].num_heads,
                                                heads[owner].key_dim)
        if big.dim() == 0:
            out[name] = big.clone().to(mine)
        else:
            out[name] = big[tuple(slice(0, s) for s in mine.shape)].clone().to(mine)
    return out


def init_by_selection(small: nn.Module, large_state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load :func:`select_weights` into ``small`` (in place) and return it."""
    small.load_state_dict(select_weights(small, large_state), strict=True)
    return small


def _large_heads(large_state: Mapping[str, torch.Tensor], owner: str) -> tuple[int, int]:
    """(heads, key_dim) of the large model's attention layer ``owner`` (from its bias table and qkv size)."""
    nh = int(large_state[owner + "attention_biases"].shape[0])
    return nh, int(large_state[owner + "qkv.weight"].shape[0]) // (3 * nh)


def _qkv(big: torch.Tensor, state: Mapping[str, torch.Tensor], owner: str, nh: int, kd: int) -> torch.Tensor:
    """(3·H·K, …) laid out head by head as [q | k | v] → the first ``nh`` heads, each q, k, v cut to ``kd``."""
    nh_l, kd_l = _large_heads(state, owner)
    if nh > nh_l or kd > kd_l:
        raise ValueError(f"weight selection: {owner}qkv has {nh_l} heads of {kd_l} channels, fewer than the "
                         f"small model's {nh} of {kd}")
    per = big.reshape(nh_l, 3, kd_l, *big.shape[1:])[:nh, :, :kd]
    return per.reshape(nh * 3 * kd, *big.shape[1:])


def _proj(big: torch.Tensor, state: Mapping[str, torch.Tensor], owner: str, nh: int, kd: int) -> torch.Tensor:
    """(dim, H·K) weight → its input columns of the first ``nh`` heads' first ``kd`` value channels."""
    nh_l, kd_l = _large_heads(state, owner)
    return big.reshape(big.shape[0], nh_l, kd_l)[:, :nh, :kd].reshape(big.shape[0], nh * kd)


_HEAD_WISE = {"qkv.weight": _qkv, "qkv.bias": _qkv, "proj.weight": _proj}
