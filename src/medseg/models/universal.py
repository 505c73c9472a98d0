"""The ``universal`` model: one prompt-free model for every task medseg was trained on.

    image ─► LiteMedSAM's frozen encoder ─► embedding ─► the head's task classifier ─► task, probability
    task's engine: ``head``        the prompt-free head on the same embedding (:mod:`medseg.models.prompt_free_head`)
                   ``specialist``  the task's native-resolution U-Net by sliding windows (thin structures)
    with boxes (a person's correction): LiteMedSAM's own prompt encoder and decoder on the same embedding

Which engine each task runs was chosen on the validation split (``medseg experiment universal``). A model folder::

    model.json                 name "universal", tasks, engines (task → engine), the encoder's weights and the
                               sha256 of every part's weights (``parts``) and of its ``model.json`` (``part_meta``:
                               how it is fed, e.g. a specialist's tiles, ``scales`` and flip ``tta``)
    head/                      a model folder (``prompt_free_head``)
    specialists/<target>/      model folders (patch-trained U-Nets)
    student/                   optional: ``lite_medsam_student`` (distilled encoder) for ``--fast``
    fast_head/                 optional: the head fine-tuned on the ``--fast`` encoder's embeddings (``model.json``'s
                               ``fast_encoder`` then names that encoder: LiteMedSAM's own at a smaller input side)

Each part is a normal model folder, loaded hash-checked; ``model.json`` pins their digests too, so a part swapped
for another, or fed otherwise than it was validated, is refused. LiteMedSAM's weights are not in the folder: they
come from the registered, hash-checked LiteMedSAM checkpoint (:func:`medseg.weights.fetch_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import InvalidInputError
from medseg.models.io import META_FILE, read_model_meta
from medseg.models.prompt_free_head import PromptFreeHead
from medseg.models.sam import Sam

ENGINE_NAMES = ("head", "specialist")


class UniversalModel(nn.Module):
    """The parts (see the module docstring).

    Args:
        sam: LiteMedSAM (its encoder feeds the head; its decoder serves box prompts).
        head: the prompt-free head over ``sam``'s embedding.
        specialists: target → native-resolution model (one output).
        specialist_options: target → how it was trained to be fed (``tile``, ``overlap``, ``img_size``,
            ``color``, ``edge``, the multi-scale ``scales``, the flip ``tta``).
        engines: task → ``head`` or ``specialist`` (every task of the head; a ``specialist`` task must have one).
        student: a lighter LiteMedSAM whose embedding feeds a head for every task in ``--fast`` mode
            (``lite_medsam_student``: a distilled encoder; or ``lite_medsam`` with ``encoder_input_size``: LiteMedSAM's
            encoder at a smaller input side); ``None``: no fast mode.
        fast_head: the head ``--fast`` runs on ``student``'s embedding (fine-tuned on it); ``None``: ``head``.
    """

    accepts_boxes = False

    def __init__(self, *, sam: Sam, head: PromptFreeHead, specialists: dict[str, nn.Module],
                 specialist_options: dict[str, dict[str, Any]], engines: dict[str, str],
                 student: Sam | None = None, fast_head: PromptFreeHead | None = None) -> None:
        super().__init__()
        missing = sorted(set(head.tasks) - set(engines))
        bad = sorted(t for t, e in engines.items() if e not in ENGINE_NAMES)
        orphans = sorted(t for t, e in engines.items() if e == "specialist" and t not in specialists)
        if missing or bad or orphans:
            raise ValueError(f"engines: tasks without an engine {missing}, unknown engines {bad}, specialist tasks "
                             f"without a specialist {orphans}")
        if fast_head is not None and (student is None or fast_head.tasks != head.tasks):
            raise ValueError("fast_head needs a student encoder and the head's tasks, in the head's order")
        self.sam, self.head, self.student, self.fast_head = sam, head, student, fast_head
        self.specialists = nn.ModuleDict(specialists)
        self.specialist_options, self.engines = specialist_options, dict(engines)

    @property
    def tasks(self) -> list[str]:
        return self.head.tasks

    @property
    def img_size(self) -> int:
        return self.head.img_size


def save_universal(folder: str | Path, *, head: str | Path, specialists: dict[str, str | Path],
                   engines: dict[str, str], student: str | Path | None = None,
                   fast_head: str | Path | None = None, fast_encoder: dict[str, Any] | None = None,
                   half: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Assemble a ``universal`` model folder from trained model folders; returns the folder (written beside it
    and renamed into place).

    Args:
        head, specialists, student: the parts' model folders (``student``: a ``lite_medsam_student`` whose encoder
            serves ``--fast``).
        fast_head, fast_encoder: ``--fast`` without a student folder: the head fine-tuned for it (a model folder)
            and the encoder it was fine-tuned on, ``{"name": "lite_medsam", "options": {...}}`` (built from the
            registered LiteMedSAM weights, so nothing of it is stored).
        half: store the parts' floating-point tensors as float16 (half the size; they load back into the float32
            modules, so what is scored from this folder is what ships).
    """
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from medseg.utils.atomic import atomic_write_text
    from medseg.weights import sha256_file

    if (fast_head is None) != (fast_encoder is None) or (fast_head is not None and student is not None):
        raise ValueError("save_universal: fast_head and fast_encoder go together, instead of a student")
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    parts = {"head": Path(head), **{f"specialists/{t}": Path(p) for t, p in specialists.items()},
             **({"student": Path(student)} if student is not None else {}),
             **({"fast_head": Path(fast_head)} if fast_head is not None else {})}
    digests, described = {}, {}  # part → sha256 of its weights, of its model.json (how it is fed: tile, scales, tta)
    for rel, src in parts.items():
        (tmp / rel).mkdir(parents=True, exist_ok=True)
        part_meta = read_model_meta(src)
        if half:
            state = {k: v.half() if v.is_floating_point() else v
                     for k, v in load_file(str(src / "model.safetensors")).items()}
            save_file(state, str(tmp / rel / "model.safetensors"))
            part_meta.update(sha256=sha256_file(tmp / rel / "model.safetensors"), stored_dtype=str(torch.float16))
        else:
            shutil.copy2(src / "model.safetensors", tmp / rel / "model.safetensors")
        atomic_write_text(tmp / rel / META_FILE, json.dumps(part_meta, indent=2))
        digests[rel] = part_meta["sha256"]
        described[rel] = sha256_file(tmp / rel / META_FILE)
    head_meta = read_model_meta(head)
    meta = {"name": "universal", "tasks": head_meta["options"]["tasks"], "engines": engines,
            "img_size": head_meta.get("img_size", 256), "encoder": head_meta.get("encoder"), "parts": digests,
            "part_meta": described,
            **({"fast_encoder": fast_encoder} if fast_encoder is not None else {}), **(extra or {})}
    atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def replace_parts(folder: str | Path, out: str | Path, parts: dict[str, str | Path],
                  extra: dict[str, Any] | None = None) -> Path:
    """A copy of the ``universal`` model folder ``folder`` at ``out`` with some parts replaced by other model folders
    (e.g. ``{"specialists/retinal-vessel": "runs/…/model"}``: a retrained specialist), everything else — engines,
    tasks, routing settings, the other parts — kept; ``model.json`` pins the new digests. Returns ``out``.

    Raises:
        InvalidInputError: a replaced part is not one of ``folder``'s (naming them).
    """
    folder = Path(folder)
    meta = read_model_meta(folder)
    unknown = sorted(set(parts) - set(meta.get("parts", {})))
    if unknown:
        raise InvalidInputError(folder / META_FILE, f"no part {', '.join(unknown)} to replace "
                                                    f"(parts: {', '.join(meta.get('parts', {}))})")
    now = {rel: Path(parts.get(rel, folder / rel)) for rel in meta["parts"]}
    own = ("name", "tasks", "engines", "img_size", "encoder", "parts", "part_meta", "fast_encoder")
    kept = {k: v for k, v in meta.items() if k not in own}
    return save_universal(out, head=now["head"], engines=meta["engines"], student=now.get("student"),
                          specialists={rel.split("/", 1)[1]: p for rel, p in now.items()
                                       if rel.startswith("specialists/")},
                          fast_head=now.get("fast_head"), fast_encoder=meta.get("fast_encoder"),
                          extra={**kept, **(extra or {})})


def load_universal(folder: str | Path, meta: dict[str, Any]) -> UniversalModel:
    """Build a :class:`UniversalModel` from its folder (every part hash-checked; see the module docstring).

    Raises:
        InvalidInputError: a part is missing, corrupt, or not the one ``model.json`` pins (naming the file).
    """
    from medseg.models.io import load_model
    from medseg.models.registry import build_model
    from medseg.weights import sha256_file

    folder = Path(folder)
    parts: dict[str, Any] = {}
    for rel, digest in meta.get("parts", {}).items():
        loaded = load_model(folder / rel)
        if loaded.meta.get("sha256") != digest:
            raise InvalidInputError(folder / rel / META_FILE, f"this part's weights ({loaded.meta.get('sha256')}) "
                                                                  f"are not the ones {folder / 'model.json'} pins")
        pinned = meta.get("part_meta", {}).get(rel)  # folders written before parts' model.json were pinned: none
        if pinned is not None and sha256_file(folder / rel / META_FILE) != pinned:
            raise InvalidInputError(folder / rel / META_FILE, "this part's model.json (how it is fed: tile, "
                                                                  f"scales, tta, …) is not the one "
                                                                  f"{folder / 'model.json'} pins")
        parts[rel] = loaded
    if "head" not in parts:
        raise InvalidInputError(folder / META_FILE, "no head part")
    enc = meta.get("encoder") or {"name": "lite_medsam", "options": {"pretrained": True}}
    sam = build_model(enc["name"], **{**enc.get("options", {}), "img_size": parts["head"].img_size})
    student = parts["student"].model if "student" in parts else None
    if "fast_head" in parts:
        fast = meta.get("fast_encoder")
        if not isinstance(fast, dict) or "name" not in fast:
            raise InvalidInputError(folder / META_FILE, "a fast_head part but no fast_encoder to feed it")
        options = {**fast.get("options", {}), "img_size": parts["head"].img_size}
        same = fast["name"] == enc["name"] and {k: v for k, v in options.items() if k != "encoder_input_size"} == \
            {**enc.get("options", {}), "img_size": parts["head"].img_size}
        if same:  # LiteMedSAM's own weights at another input side: built empty, then sharing ``sam``'s tensors
            student = build_model(fast["name"], **{**options, "pretrained": False})
            share_weights(student, sam)
            share_weights(getattr(student.image_encoder, "encoder", student.image_encoder), sam.image_encoder)
        else:
            student = build_model(fast["name"], **options)
    specialists = {rel.split("/", 1)[1]: p for rel, p in parts.items() if rel.startswith("specialists/")}
    return UniversalModel(
        sam=sam, head=parts["head"].model, student=student,
        fast_head=parts["fast_head"].model if "fast_head" in parts else None,
        specialists={t: p.model for t, p in specialists.items()},
        specialist_options={t: {"tile": p.tile, "overlap": p.overlap, "img_size": p.img_size, "color": p.color,
                                "edge": p.edge, "scales": p.scales, "tta": p.tta}
                            for t, p in specialists.items()},
        engines=meta["engines"]).eval()


def share_weights(dst: nn.Module, src: nn.Module) -> int:
    """Make ``dst`` use ``src``'s weights wherever both have a tensor of the same name and shape: parameters become
    the same tensor objects (one copy in memory; e.g. LiteMedSAM's encoder at two input sides, whose weights do not
    depend on the side) and persistent buffers (normalisation statistics) are copied. Non-persistent buffers stay
    ``dst``'s own (some depend on the side). Returns how many tensors were shared or copied."""
    params = dict(src.named_parameters())
    done = 0
    for name, own in list(dst.named_parameters()):
        other = params.get(name)
        if other is not None and other.shape == own.shape and other.dtype == own.dtype:
            owner_name, _, attr = name.rpartition(".")
            dst.get_submodule(owner_name).register_parameter(attr, other)
            done += 1
    theirs, mine = src.state_dict(), dst.state_dict()
    buffers = {k for k, _ in dst.named_buffers()}
    with torch.no_grad():
        for name in buffers & set(mine) & set(theirs):
            if mine[name].shape == theirs[name].shape:
                mine[name].copy_(theirs[name])
                done += 1
    return done
