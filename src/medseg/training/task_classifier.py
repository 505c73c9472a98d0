"""Refit a task model's classifier (ESP-MedSAM's :class:`~medseg.models.task_classifier.TaskClassifier`) on frozen
features: the second phase of its training.

Trained jointly with the segmentation losses, the classifier sees only the few batches of that stage (at the CPU
scale 100 steps of 8 images, 56 % test accuracy over 11 tasks). Its input, the pooled tokens of the bag-free encoder
stages, does not depend on the task, so once the model is trained those features can be computed once for every
training image (and its flips) and the small head fitted on all of them for hundreds of full-batch steps in
seconds. The step is chosen on the validation split (highest accuracy, then lowest loss); the test split is never
seen. Everything but the head stays as it was, so segmentation with a given task is unchanged.

    feats = pooled_features(model, images, img_size=256)       # (N·F, 2C), F flips per image
    feats = pooled_embeddings(cache_folder, rows)               # or from cached encoder embeddings
    result = fit_task_classifier(model, feats, labels, val_feats, val_labels, ClassifierFitConfig())
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from medseg.data.geometry import letterbox_image
from medseg.models.task_classifier import TaskClassifier, mean_of_heads
from medseg.training.config import Strict
from medseg.training.embedding_cache import open_embeddings

#: flips of the image in its own frame (numpy axes of an (H, W, C) image): none, horizontal, vertical
FLIP_AXES: tuple[tuple[int, ...], ...] = ((), (1,), (0,))


class ClassifierFitConfig(Strict):
    """How the head is refitted on pooled features: full-batch AdamW steps, the step chosen on validation."""

    steps: int = Field(500, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    #: start from freshly initialised head weights (seeded) instead of the jointly trained ones
    reinit: bool = True
    seed: int = 0
    #: weight each task's training loss by the inverse of its share of the training rows (a task with few images,
    #: e.g. 48 vessel images against 280 nuclei ones, counts as much as any other); validation is unweighted
    balanced: bool = False
    #: the weights the fit started from (the jointly trained ones) are kept (step 0) only when no step reaches their
    #: validation accuracy, so a refit never lowers it. At equal accuracy the refit wins: its validation loss is not
    #: compared with theirs, since label smoothing raises it by design (compared so, a perfect jointly trained
    #: classifier would always beat a smoothed refit and the smoothing would never ship). The refit's own step is
    #: chosen on validation accuracy, then loss.
    keep_before: bool = False
    #: the training loss's label smoothing (``torch.nn.functional.cross_entropy``): each target keeps 1 − ε and
    #: spreads ε over all tasks, so the head is not pushed to certainty on the training domains; it routed unseen
    #: datasets of known tasks better in leave-datasets-out tests (``benchmarks/lodo_routing.py``). Validation
    #: (which chooses the step) is scored without it.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    #: inverted dropout on the pooled input features at every training step (each feature zeroed with this
    #: probability, the rest scaled by 1 / (1 − p)); validation and prediction see them whole
    feature_dropout: float = Field(0.0, ge=0, lt=1)
    #: mixup (Zhang et al., ICLR 2018) of the training rows with concentration α: every step each row is mixed with
    #: a random other, weight λ ~ Beta(α, α) per row, and its loss is λ·CE(own task) + (1 − λ)·CE(the other's);
    #: 0 turns it off
    mixup: float = Field(0.0, ge=0)
    #: fit this many heads (seeds ``seed``, ``seed`` + 10, …; each its own step chosen on validation) and keep the
    #: mean of their logits, folded into one head of ``ensemble`` × its hidden width
    #: (:func:`~medseg.models.task_classifier.mean_of_heads`): the refit's seed-to-seed variance on unseen datasets
    #: averaged away; chosen by leave-datasets-out routing (``benchmarks/lodo_routing.py``)
    ensemble: int = Field(1, ge=1)


class EncoderRefitConfig(ClassifierFitConfig):
    """A refit whose features come from the images through the model's own encoder (:func:`pooled_features`):
    the fit, plus flip augmentation and the encoder's batch."""

    #: add the horizontally and vertically flipped training images (features of three views per image)
    flips: bool = True
    batch_size: int = Field(8, ge=1)  # images per encoder pass when computing features


def pooled_embeddings(folder: str | Path, rows: list[int] | None = None, *, batch_size: int = 32) -> torch.Tensor:
    """The classifier's input read from a finished embedding cache (:mod:`medseg.training.embedding_cache`): the
    cached (C, h, w) embeddings of ``rows`` (all when ``None``) pooled as the classifier pools its tokens
    (:meth:`TaskClassifier.pool`, parameter-free).

    Returns:
        (len(rows), 2C) float32.
    """
    emb = open_embeddings(folder)
    rows = list(range(len(emb))) if rows is None else rows
    out = [torch.zeros(0, 2 * emb.shape[1])]
    for start in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.asarray(emb[rows[start:start + batch_size]], dtype=np.float32))
        out.append(TaskClassifier.pool(x.flatten(2).transpose(1, 2)))
    return torch.cat(out)


@dataclass
class ClassifierFit:
    """What :func:`fit_task_classifier` did. ``history``: one row per step (loss, train and val accuracy)."""

    chosen_step: int
    train_accuracy: float
    val_accuracy: float | None
    val_accuracy_before: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: with ``ensemble`` > 1: each member's own fit (``history`` then has a ``member`` column; ``chosen_step`` is
    #: the first member's, the accuracies are the folded head's)
    members: list[ClassifierFit] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = {"chosen_step": self.chosen_step, "train_accuracy": self.train_accuracy,
               "val_accuracy": self.val_accuracy, "val_accuracy_before": self.val_accuracy_before}
        if self.members:
            out["members"] = [m.summary() for m in self.members]
        return out


@torch.no_grad()  # not inference_mode: the features are trained on afterwards
def pooled_features(model: nn.Module, images: Iterable[np.ndarray], *, img_size: int, flips: bool = False,
                    batch_size: int = 8, device: str | torch.device = "cpu") -> torch.Tensor:
    """The classifier's input for each image: letterboxed to ``img_size`` as at prediction, through the model's
    bag-free stages (``image_encoder.shared_features``), pooled (:meth:`TaskClassifier.pool`).

    Args:
        model: a task model (``tasks``, ``classifier``, ``image_encoder.shared_features``).
        images: (H, W, 3) uint8 images (sizes may differ); consumed one at a time.
        flips: also each image flipped horizontally and vertically (rows in :data:`FLIP_AXES` order per image).

    Returns:
        (N·F, 2C) float32, F = 3 with ``flips`` else 1, the F views of an image in consecutive rows.
    """
    model = model.eval().to(device)
    views = FLIP_AXES if flips else ((),)
    out: list[torch.Tensor] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(pending)).to(device)
        out.append(model.classifier.pool(model.image_encoder.shared_features(x)).float().cpu())
        pending.clear()

    for img in images:
        for axes in views:
            view = np.ascontiguousarray(np.flip(img, axes)) if axes else img
            pending.append(letterbox_image(view, img_size)[0])
            if len(pending) >= batch_size:
                flush()
    if pending:
        flush()
    if not out:
        raise ValueError("pooled_features: no images")
    return torch.cat(out)


def fit_task_classifier(model: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                        val_features: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
                        cfg: ClassifierFitConfig | None = None) -> ClassifierFit:
    """Fit ``model.classifier.head`` on pooled features in place (every other weight untouched). With
    ``cfg.ensemble`` = K > 1 the head is replaced by the K fitted heads folded into one of K × its hidden width
    (save the model with ``classifier_hidden`` set to ``model.classifier.head[1].out_features``).

    Args:
        model: the task model; its classifier's head is replaced by the chosen step's weights.
        features, labels: (N, 2C) float32 from :func:`pooled_features`, (N,) int64 task indices.
        val_features, val_labels: the validation split's (no flips); chooses the step. ``None``: the last step.
        cfg: the fit's settings.

    Raises:
        ValueError: shapes disagree, or a label is not one of the model's tasks.
    """
    cfg = cfg or ClassifierFitConfig()
    n_tasks = len(model.tasks)
    for f, y, what in ((features, labels, "training"), (val_features, val_labels, "validation")):
        if f is None or y is None:
            continue
        if f.ndim != 2 or y.shape != (f.shape[0],):
            raise ValueError(f"{what} features {tuple(f.shape)} and labels {tuple(y.shape)} do not pair up")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_tasks):
            raise ValueError(f"{what} labels must be task indices in [0, {n_tasks})")
    has_val = val_features is not None and val_labels is not None and len(val_labels) > 0
    if cfg.ensemble == 1:
        return _fit_head(model.classifier.head, n_tasks, features, labels, val_features, val_labels, cfg)
    start = copy.deepcopy(model.classifier.head)
    heads: list[nn.Module] = []
    members: list[ClassifierFit] = []
    for i in range(cfg.ensemble):
        heads.append(copy.deepcopy(start))
        members.append(_fit_head(heads[-1], n_tasks, features, labels, val_features, val_labels,
                                 cfg.model_copy(update={"seed": cfg.seed + 10 * i, "ensemble": 1})))
    head = model.classifier.head = mean_of_heads(heads)  # type: ignore[arg-type]
    with torch.no_grad():
        train_acc = float((head(features).argmax(1) == labels).float().mean())
        val_acc = float((head(val_features).argmax(1) == val_labels).float().mean()) if has_val else None
    history = [{"member": i, **row} for i, m in enumerate(members) for row in m.history]
    return ClassifierFit(chosen_step=members[0].chosen_step, train_accuracy=train_acc, val_accuracy=val_acc,
                         val_accuracy_before=members[0].val_accuracy_before, history=history, members=members)


def _fit_head(head: nn.Module, n_tasks: int, features: torch.Tensor, labels: torch.Tensor,
              val_features: torch.Tensor | None, val_labels: torch.Tensor | None,
              cfg: ClassifierFitConfig) -> ClassifierFit:
    """One head fitted in place as :func:`fit_task_classifier` says (inputs checked there)."""
    has_val = val_features is not None and val_labels is not None and len(val_labels) > 0

    def evaluate(f: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            logits = head(f)
            return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())

    before = evaluate(val_features, val_labels)[1] if has_val else None  # type: ignore[arg-type]
    initial = copy.deepcopy(head.state_dict())
    if cfg.reinit:
        gen = torch.Generator().manual_seed(cfg.seed)
        for m in head.modules():
            if isinstance(m, nn.Linear):
                bound = 1 / m.in_features ** 0.5
                with torch.no_grad():
                    m.weight.uniform_(-bound, bound, generator=gen)
                    m.bias.uniform_(-bound, bound, generator=gen)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    head.train()
    weight = None
    if cfg.balanced:
        counts = torch.bincount(labels, minlength=n_tasks).float()
        weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * int((counts > 0).sum())), 0.0)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    best: tuple[float, float] | None = None
    best_state, chosen, history = initial, 0, []
    noise = torch.Generator().manual_seed(cfg.seed + 1)  # dropout masks and mixup pairs
    shares = np.random.default_rng(cfg.seed + 1)  # mixup weights
    for step in range(1, cfg.steps + 1):
        with torch.enable_grad():
            loss = _training_loss(head, features, labels, weight, cfg, noise, shares)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        row: dict[str, Any] = {"step": step, "loss": float(loss.detach()),
                               "train_accuracy": evaluate(features, labels)[1]}
        key = (step, 0.0)
        if has_val:
            v_loss, v_acc = evaluate(val_features, val_labels)  # type: ignore[arg-type]
            row |= {"val_loss": v_loss, "val_accuracy": v_acc}
            key = (v_acc, -v_loss)
        history.append(row)
        if best is None or key > best:
            best, best_state, chosen = key, copy.deepcopy(head.state_dict()), step
    if cfg.keep_before and has_val and best is not None and best[0] < before:  # type: ignore[operator]
        best_state, chosen = initial, 0
    head.load_state_dict(best_state)
    head.eval()
    pick = history[chosen - 1] if chosen else {"train_accuracy": evaluate(features, labels)[1],
                                                "val_accuracy": before}
    return ClassifierFit(chosen_step=chosen, train_accuracy=pick["train_accuracy"],
                         val_accuracy=pick.get("val_accuracy"), val_accuracy_before=before, history=history)


def _training_loss(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                   cfg: ClassifierFitConfig, gen: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    """One full-batch step's loss: cross-entropy (class weights, label smoothing) of the head on the features after
    ``feature_dropout`` and ``mixup``, normalised by the rows' weights as ``F.cross_entropy``'s mean is."""
    x = features
    if cfg.feature_dropout > 0:
        keep = torch.rand(x.shape, generator=gen) >= cfg.feature_dropout
        x = x * keep / (1 - cfg.feature_dropout)
    if cfg.mixup <= 0:
        return F.cross_entropy(head(x), labels, weight=weight, label_smoothing=cfg.label_smoothing)
    w = torch.ones(len(labels)) if weight is None else weight[labels]
    lam = torch.from_numpy(rng.beta(cfg.mixup, cfg.mixup, len(labels))).to(x.dtype)
    lam = torch.maximum(lam, 1 - lam)  # the row keeps the larger share: its own task dominates
    perm = torch.randperm(len(labels), generator=gen)
    logits = head(lam[:, None] * x + (1 - lam[:, None]) * x[perm])
    ce_own = F.cross_entropy(logits, labels, weight=weight, reduction="none", label_smoothing=cfg.label_smoothing)
    ce_other = F.cross_entropy(logits, labels[perm], weight=weight, reduction="none",
                               label_smoothing=cfg.label_smoothing)
    return (lam * ce_own + (1 - lam) * ce_other).sum() / (lam * w + (1 - lam) * w[perm]).sum()
