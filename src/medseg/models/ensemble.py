"""Logit ensembles: several networks that take the same input and give the same outputs, run side by side, their
logits averaged. Unlike a weight average (:mod:`medseg.models.averaging`), the members need not share a starting
point or even an architecture, only the input and output shapes, so two specialists trained with different
augmentation (one mild, one strong) combine: averaging their logits cancels much of each run's own error on images
unlike the training set, where single runs of one recipe vary most (``benchmarks/heldout_specialist_aug.py``). The
cost is one forward pass per member.

    folder = ensemble_model_folders(["runs/a/model", "runs/b/model"], "runs/ensemble/model")
    loaded = load_model(folder)  # builder ``ensemble``, hash-checked like any model folder
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import InvalidInputError

#: ``model.json`` entries that say how a model is fed; every member of an ensemble must agree on them
FEEDING_KEYS = ("tile", "overlap", "color", "edge", "targets")


class LogitEnsemble(nn.Module):
    """The mean of ``members``' logits.

    Args:
        members: two or more models mapping (B, C, H, W) images to (B, T, H, W) logits of the same shape (e.g.
            patch-trained U-Nets with one output per target).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, T, H, W) logits, the members' mean (in the members' dtype)."""
        total = self.members[0](x)
        for m in self.members[1:]:
            total = total + m(x)
        return total / len(self.members)


def ensemble_model_folders(folders: Sequence[str | Path], out: str | Path, *, extra: dict[str, Any] | None = None
                           ) -> Path:
    """``out``: one model folder (builder ``ensemble``) holding ``folders``' models as members, each loaded
    hash-checked. Its ``model.json`` keeps how the members are fed (input size, ``tile``, ``overlap``, colour, edge
    operator, targets: all must agree), records each member's builder, options and sha256 (``ensembled_from``), and
    adds ``extra``. Returns ``out``.

    Raises:
        InvalidInputError: fewer than two folders, or a member fed otherwise than the first (naming its folder and
            the entry that differs).
    """
    from medseg.models.io import META_FILE, load_model, save_model_folder

    if len(folders) < 2:
        raise InvalidInputError(Path(out), f"an ensemble needs at least two member folders, got {len(folders)}")
    loaded = [load_model(f) for f in folders]
    ref = loaded[0]
    fed = [{"img_size": m.img_size, **{k: m.meta.get(k) for k in FEEDING_KEYS}} for m in loaded]
    for f, mine in zip(folders[1:], fed[1:], strict=True):
        for key, theirs in fed[0].items():
            if mine[key] != theirs:
                raise InvalidInputError(Path(f) / META_FILE, f"{key} {mine[key]!r} differs from {folders[0]}'s "
                                        f"{theirs!r}: the members of an ensemble must be fed alike")
    members = [{"name": m.name, "options": m.meta.get("options", {})} for m in loaded]
    feeding = {k: ref.meta[k] for k in FEEDING_KEYS if k in ref.meta}
    model = LogitEnsemble([m.model for m in loaded])
    return save_model_folder(model, out, name="ensemble", options={"members": members}, img_size=ref.img_size,
                             extra={**feeding, **(extra or {}),
                                    "ensembled_from": [{"name": m.name, "sha256": m.meta["sha256"],
                                                        **({"best_score": m.meta["best_score"]}
                                                           if "best_score" in m.meta else {})}
                                                       for m in loaded]})


def ensemble_member_folder(folder: str | Path, index: int, out: str | Path) -> Path:
    """``out``: member ``index`` of the ensemble model folder ``folder`` as a model folder of its own (its builder,
    options and weights, how the ensemble is fed). A folder that is not an ensemble is its own member 0 (copied).
    Returns ``out``.

    Raises:
        InvalidInputError: no such member.
    """
    from medseg.models.io import META_FILE, copy_model_folder, load_model, read_model_meta, save_model_folder

    name = read_model_meta(folder)["name"]
    if name != "ensemble":
        if index != 0:
            raise InvalidInputError(Path(folder) / META_FILE, f"a single {name} model has no member {index}")
        return copy_model_folder(folder, out)  # hash-checked there
    loaded = load_model(folder)
    members = loaded.meta["options"]["members"]
    if not 0 <= index < len(members):
        raise InvalidInputError(Path(folder) / META_FILE, f"no member {index}: the ensemble has {len(members)}")
    assert isinstance(loaded.model, LogitEnsemble)
    keep = {k: v for k, v in loaded.meta.items() if k in FEEDING_KEYS}
    source = loaded.meta.get("ensembled_from", [{}] * len(members))[index]
    return save_model_folder(loaded.model.members[index], out, name=members[index]["name"],
                             options=members[index].get("options", {}), img_size=loaded.img_size,
                             extra={**keep, "member_of": loaded.meta["sha256"],
                                    **({"best_score": source["best_score"]} if "best_score" in source else {})})
