"""Model folders: ``model.safetensors`` + ``model.json`` (name, builder options, input size, sha256, versions).

Loading never unpickles: weights come from safetensors and are hash-checked against the JSON.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn

from medseg.errors import InvalidInputError, MedsegError
from medseg.models.builders import load_state_strict
from medseg.models.parts import is_task_model
from medseg.models.registry import build_model
from medseg.ops.model_input import ModelInput
from medseg.utils.atomic import atomic_path, atomic_write_text
from medseg.weights import sha256_file

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass
class LoadedModel:
    """A model ready for inference with what is needed to feed it."""

    model: nn.Module
    name: str
    img_size: int
    meta: dict[str, Any]

    @property
    def tile(self) -> int | None:
        """Sliding-window tile the model was trained for (patch training), else ``None`` (letterbox input)."""
        t = self.meta.get("tile")
        return None if t is None else int(t)

    @property
    def edge(self) -> str | None:
        """Edge operator the model was trained on (inputs must be filtered the same way), else ``None``."""
        e = self.meta.get("edge")
        return None if e in (None, "none") else str(e)

    @property
    def color(self) -> str:
        """``grey`` for a model trained on grey images (inputs are converted the same way), else ``rgb``."""
        return str(self.meta.get("color", "rgb"))

    @property
    def input(self) -> ModelInput:
        """The input transform the model was trained with (colour, then edge): apply it to every image."""
        return ModelInput.from_meta(self.meta)

    @property
    def targets(self) -> list[str]:
        """Output names of a model with one output per target (``data.heads: per_target``), else ``[]``."""
        return list(self.meta.get("targets") or [])

    def channel(self, target: str | None) -> int:
        """Output index of ``target``; a one-output model takes ``None``.

        Raises:
            ValueError: a multi-output model without a (known) target — the message lists them.
        """
        if is_task_model(self.model):  # one output, segmented as a task (ESP-MedSAM)
            if target is not None:
                raise ValueError(f"{self.name} has one output for every task; pick a task with --task")
            return 0
        names = self.targets
        if not names:
            if target is not None:
                raise ValueError(f"{self.name} has one output; it takes no target")
            return 0
        if target not in names:
            raise ValueError(f"choose the target to segment: {', '.join(names)}" if target is None else
                             f"unknown target {target!r}; this model segments: {', '.join(names)}")
        return names.index(target)

    @property
    def scales(self) -> tuple[float, ...]:
        """Resize factors whose sliding-window logits are averaged at inference (multi-scale test-time
        augmentation, ``model.json``'s ``scales``; default ``(1.0,)``: the image as it is)."""
        return tuple(float(f) for f in self.meta.get("scales") or (1.0,))

    @property
    def tta(self) -> bool:
        """Whether the logits of the four flips are averaged at inference (flip test-time augmentation,
        ``model.json``'s ``tta``; default ``False``)."""
        return bool(self.meta.get("tta", False))

    @property
    def overlap(self) -> float:
        """Default sliding-window overlap (the one used in validation)."""
        return float(self.meta.get("overlap", 0.25))


def save_model_folder(model: nn.Module, folder: str | Path, *, name: str, options: dict[str, Any], img_size: int,
                      extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json`` atomically; returns the folder."""
    from medseg import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    digest = sha256_file(folder / WEIGHTS_FILE)
    meta = {"name": name, "options": options, "img_size": img_size, "sha256": digest,
            "versions": {"medseg": __version__, "torch": torch.__version__, "python": platform.python_version()},
            **(extra or {})}
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2, default=str))
    return folder


def copy_model_folder(src: str | Path, dst: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """A copy of the model folder ``src`` at ``dst`` (weights hash-checked first; ``model.json`` written last,
    atomically) with ``meta`` set in its ``model.json`` (e.g. ``{"scales": [1.0, 0.8]}``: how it is fed). Returns
    ``dst``.

    Raises:
        InvalidInputError: ``src`` is not a loadable model folder, or ``meta`` names its weights' entries.
    """
    src, dst = Path(src), Path(dst)
    load_model(src)  # hash-checked, builds
    fixed = sorted(set(meta or {}) & {"name", "options", "sha256"})
    if fixed:
        raise InvalidInputError(src / META_FILE, f"{', '.join(fixed)} describe the weights and cannot be changed")
    dst.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst / WEIGHTS_FILE) as tmp:
        shutil.copyfile(src / WEIGHTS_FILE, tmp)
    atomic_write_text(dst / META_FILE, json.dumps({**read_model_meta(src), **(meta or {})}, indent=2, default=str))
    return dst


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished model (its ``model.json``, written last by :func:`save_model_folder`)."""
    return (Path(folder) / META_FILE).is_file()


def read_model_meta(folder: str | Path) -> dict[str, Any]:
    """A model folder's ``model.json`` (name, builder options, input size, sha256, …).

    Raises:
        InvalidInputError: missing or unreadable (naming the file).
    """
    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(path, f"unreadable model description: {exc}") from exc


def load_model(spec: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model from a folder written by :func:`save_model_folder`, its ``model.json`` / ``.safetensors``,
    or a registered name with published weights (``lite_medsam``).

    Raises:
        InvalidInputError: missing/corrupt files or a hash mismatch (naming the file).
    """
    path = Path(spec)
    if not path.exists() and str(spec) == "lite_medsam":
        return LoadedModel(build_model("lite_medsam", pretrained=True).to(device).eval(), "lite_medsam", 256,
                           {"name": "lite_medsam", "source": "registered weights"})
    if not path.exists() and str(spec) == "universal":
        from medseg.weights import shipped_model_folder

        path = shipped_model_folder("universal")
    if path.is_file():
        path = path.parent
    if not is_model_folder(path):
        raise MedsegError(f"{spec}: not a model folder (no {META_FILE}) and not a registered model with weights")
    meta = read_model_meta(path)
    if meta.get("name") == "universal":  # a folder of model folders (medseg.models.universal)
        from medseg.models.universal import load_universal

        return LoadedModel(load_universal(path, meta).to(device).eval(), "universal", int(meta.get("img_size", 256)),
                           meta)
    wpath = path / WEIGHTS_FILE
    if not wpath.is_file():
        raise InvalidInputError(wpath, "weights file is missing")
    blob = wpath.read_bytes()  # read once: hashed, then parsed
    digest = hashlib.sha256(blob).hexdigest()
    if not meta.get("sha256"):
        raise InvalidInputError(path / META_FILE,
                                f"has no sha256 for {WEIGHTS_FILE}, so the weights cannot be verified; "
                                f"if you trust this file, add \"sha256\": \"{digest}\" to {META_FILE}")
    if digest != meta["sha256"]:
        raise InvalidInputError(wpath, f"sha256 {digest[:12]}… does not match model.json ({meta['sha256'][:12]}…)")
    try:
        state = load_safetensors(blob)
    except Exception as exc:
        raise InvalidInputError(wpath, f"corrupt safetensors file: {exc}") from exc
    model = build_model(meta["name"], **meta.get("options", {}))
    load_state_strict(model, state, str(wpath))
    return LoadedModel(model.to(device).eval(), meta["name"], int(meta.get("img_size", 256)), meta)
