"""Weight averaging of models fine-tuned from the same start (a *uniform model soup*, Wortsman et al., ICML 2022):
one model whose every floating-point tensor is the (weighted) mean of the ingredients' tensors. Runs that share a
starting point and differ only in their training seed (data order, augmentation draws) usually land in one basin,
where the mean scores at least as well as the typical ingredient and varies less between recipes' repeats than any
single run; whether it does here is measured, not assumed (``benchmarks/fast_head_soup.py``).

    soup = average_model_folders(["runs/a/model", "runs/b/model"], "runs/soup/model")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from medseg.errors import InvalidInputError
from medseg.models.io import META_FILE, load_model, save_model_folder


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None
                        ) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same keys and shapes.

    Floating-point tensors are averaged in float32 and stored in the first state's dtype; any other tensor (an
    integer buffer such as a step counter) must be equal in every state and is kept.

    Args:
        states: two or more state dicts (name → tensor).
        weights: one non-negative weight per state, not all zero (``None``: equal weights); normalised to sum to 1.

    Raises:
        ValueError: fewer than two states, keys or shapes that differ, unequal non-float tensors, or bad weights.
    """
    if len(states) < 2:
        raise ValueError(f"averaging needs at least two models, got {len(states)}")
    w = [1.0] * len(states) if weights is None else [float(x) for x in weights]
    if len(w) != len(states) or any(x < 0 or x != x for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be {len(states)} non-negative numbers, not all zero; got {list(w)}")
    w = [x / sum(w) for x in w]
    first = states[0]
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(first):
            diff = sorted(set(s) ^ set(first))
            raise ValueError(f"model {i} does not have model 0's tensors (differ: {', '.join(diff[:5])})")
        bad = [k for k in first if s[k].shape != first[k].shape]
        if bad:
            raise ValueError(f"model {i}: shapes differ from model 0's for {', '.join(bad[:5])}")
    out: dict[str, torch.Tensor] = {}
    for k, t in first.items():
        if t.is_floating_point():
            acc = sum(wi * s[k].detach().float() for wi, s in zip(w, states, strict=True))
            out[k] = acc.to(t.dtype)  # type: ignore[union-attr]
        else:
            if any(not torch.equal(s[k], t) for s in states[1:]):
                raise ValueError(f"{k}: a non-float tensor that differs between the models cannot be averaged")
            out[k] = t.clone()
    return out


def average_model_folders(folders: Sequence[str | Path], out: str | Path, *, weights: Sequence[float] | None = None
                          ) -> Path:
    """``out``: a model folder whose weights are the mean of ``folders``' (each loaded hash-checked, built by the
    same builder with the same options and input size); its ``model.json`` records the ingredients' sha256 and
    weights (``averaged_from``) and keeps the other entries on which all ingredients agree. Returns ``out``.

    Raises:
        InvalidInputError: the folders are not the same kind of model (naming the first that differs), or their
            tensors do not pair up.
    """
    loaded = [load_model(f) for f in folders]
    ref = loaded[0]
    for f, m in zip(folders[1:], loaded[1:], strict=True):
        mine = (m.name, m.meta.get("options", {}), m.img_size)
        theirs = (ref.name, ref.meta.get("options", {}), ref.img_size)
        if mine != theirs:
            raise InvalidInputError(Path(f) / META_FILE, f"a {mine[0]} model with options {mine[1]} at {mine[2]}² "
                                    f"cannot be averaged with {folders[0]}'s {theirs[0]} ({theirs[1]}, {theirs[2]}²)")
    try:
        state = average_state_dicts([m.model.state_dict() for m in loaded], weights)
    except ValueError as exc:
        raise InvalidInputError(Path(folders[0]), f"cannot average with {', '.join(map(str, folders[1:]))}: {exc}"
                                ) from exc
    model = ref.model
    model.load_state_dict(state)
    w = [1.0 / len(loaded)] * len(loaded) if weights is None else [x / sum(weights) for x in weights]
    own = ("name", "options", "img_size", "sha256", "versions", "averaged_from")
    # other descriptions (e.g. a classifier refit's summary) only where every ingredient says the same
    keep = {k: v for k, v in ref.meta.items() if k not in own and all(m.meta.get(k) == v for m in loaded[1:])}
    return save_model_folder(model, out, name=ref.name, options=ref.meta.get("options", {}), img_size=ref.img_size,
                             extra={**keep, "averaged_from": [{"sha256": m.meta["sha256"], "weight": wi}
                                                              for m, wi in zip(loaded, w, strict=True)]})
