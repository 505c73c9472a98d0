"""Optimiser parameter groups: a learning-rate factor per parameter-name prefix.

Fine-tuning a pretrained model with new parts (ESP-MedSAM's parameter bags, patch prompt generator and task
classifier on LiteMedSAM) usually gives the new parts a larger learning rate than the pretrained weights (the
"discriminative learning rates" of ULMFiT, timm's ``layer_decay``, Lightning's ``BackboneFinetuning``). Here a config
names prefixes and factors::

    optim:
      lr: 1.0e-4
      lr_multipliers: {classifier: 10, patch_prompt: 10, image_encoder.controller: 10}

A parameter takes the factor of its longest matching prefix (``a.b`` matches ``a.b`` and ``a.b.c``, not ``a.bc``),
else 1.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def parameter_groups(model: nn.Module, lr: float, multipliers: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` in AdamW parameter groups, one per distinct learning rate.

    Args:
        model: the model (frozen parameters, ``requires_grad=False``, are left out).
        lr: the base learning rate.
        multipliers: parameter-name prefix → factor on ``lr`` (the longest matching prefix wins).

    Returns:
        ``[{"params": [...], "lr": lr × factor, "name": prefix or "base"}, ...]`` without empty groups.

    Raises:
        ValueError: a prefix names no trainable parameter of ``model`` (a typo would silently do nothing), or a
            factor is negative.
    """
    multipliers = dict(multipliers or {})
    bad = {k: v for k, v in multipliers.items() if v < 0}
    if bad:
        raise ValueError(f"optim.lr_multipliers: factors must be ≥ 0, got {bad}")
    prefixes = sorted(multipliers, key=len, reverse=True)
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = next((k for k in prefixes if name == k or name.startswith(k + ".")), "base")
        groups.setdefault(key, []).append(p)
    unused = [k for k in multipliers if k not in groups]
    if unused:
        top = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"optim.lr_multipliers: {unused} name no trainable parameter of {type(model).__name__} "
                         f"(top level: {top})")
    return [{"params": ps, "lr": lr * multipliers.get(k, 1.0), "name": k} for k, ps in groups.items()]
