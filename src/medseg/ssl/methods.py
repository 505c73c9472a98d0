"""Encoder-only self-supervised methods: SimSiam, BYOL and DINO, each an ``nn.Module`` whose forward maps a list of
views of one batch to its loss.

Written from the papers (Chen & He, CVPR 2021; Grill et al., NeurIPS 2020; Caron et al., ICCV 2021) at their
published settings, with the widths as options (smaller at CPU scale):

* **SimSiam**: 3-layer projector (BN on every layer, the last without affine), 2-layer bottleneck predictor;
  loss ``−½·cos(p₁, sg(z₂)) − ½·cos(p₂, sg(z₁))`` (stop-gradient, no momentum encoder).
* **BYOL**: 2-layer projector and predictor (4096 → 256); a target network (backbone + projector) that is an
  exponential moving average of the online one with τ rising from ``base_momentum`` to 1 on a cosine; loss
  ``2 − 2·cos(p, sg(z′))`` symmetrised.
* **DINO**: 3-layer head with a 256-d bottleneck, ℓ2-normalised, then a weight-normalised linear layer to ``out_dim``
  prototypes (the last layer's norm fixed, as ``norm_last_layer=True``); the teacher (EMA) sees the two global views
  and the student every view (global and local crops); the teacher's outputs are centred (centre EMA 0.9) and
  sharpened (τ_t = 0.04), the student's softened (τ_s = 0.1); cross-entropy over every (teacher view, other student
  view) pair.

Views come from :mod:`medseg.ssl.views` (:meth:`SslMethod.view_options` gives each method's own recipe).
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from medseg.ssl.backbone import Backbone
from medseg.ssl.views import ViewOptions


def mlp(dims: list[int], *, last_bn: bool = False, last_bn_affine: bool = True, bias: bool = True) -> nn.Sequential:
    """Linear → BN → ReLU blocks through ``dims`` (no ReLU after the last layer; its BN optional)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=bias and (last and not last_bn)))
        if not last:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=last_bn_affine))
    return nn.Sequential(*layers)


def _ema(target: nn.Module, online: nn.Module, momentum: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
        for t, o in zip(target.buffers(), online.buffers(), strict=True):
            t.copy_(o)


def _frozen_copy(module: nn.Module) -> nn.Module:
    out = copy.deepcopy(module)
    out.requires_grad_(False)
    return out


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL/DINO teacher momentum: ``1 − (1 − base)·(cos(π·progress) + 1)/2``; base at the start, 1 at the end."""
    p = min(max(progress, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * p) + 1) / 2


class SslMethod(nn.Module):
    """Base: ``forward(views) → loss``; :meth:`momentum_update` after each optimiser step (EMA methods)."""

    name = "ssl"

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def view_options(self, size: int) -> list[ViewOptions]:
        """One :class:`ViewOptions` per view the method takes (default: two symmetric views)."""
        return [ViewOptions(size=size), ViewOptions(size=size)]

    def momentum_update(self, progress: float) -> None:
        """Update the momentum (target/teacher) network; ``progress`` = done steps / all steps, in [0, 1]."""

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SimSiam(SslMethod):
    """SimSiam. Args: backbone; ``proj_dim`` (2048 in the paper), ``pred_dim`` (512)."""

    name = "simsiam"

    def __init__(self, backbone: Backbone, *, proj_dim: int = 2048, pred_dim: int = 512) -> None:
        super().__init__(backbone)
        d = backbone.dim
        self.projector = mlp([d, proj_dim, proj_dim, proj_dim], last_bn=True, last_bn_affine=False, bias=False)
        self.predictor = nn.Sequential(nn.Linear(proj_dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True), nn.Linear(pred_dim, proj_dim))

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        z1, z2 = (self.projector(self.backbone(v)) for v in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean()
                 + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2


class BYOL(SslMethod):
    """BYOL. Args: backbone; ``hidden_dim`` (4096), ``proj_dim`` (256), ``base_momentum`` (0.996)."""

    name = "byol"

    def __init__(self, backbone: Backbone, *, hidden_dim: int = 4096, proj_dim: int = 256,
                 base_momentum: float = 0.996) -> None:
        super().__init__(backbone)
        self.projector = mlp([backbone.dim, hidden_dim, proj_dim])
        self.predictor = mlp([proj_dim, hidden_dim, proj_dim])
        self.target_backbone = _frozen_copy(backbone)
        self.target_projector = _frozen_copy(self.projector)
        self.base_momentum = base_momentum

    def view_options(self, size: int) -> list[ViewOptions]:
        """BYOL's asymmetric pair: always blurred vs rarely blurred and sometimes solarised."""
        return [ViewOptions(size=size, scale=(0.08, 1.0), blur_p=1.0),
                ViewOptions(size=size, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2)]

    def momentum_update(self, progress: float) -> None:
        m = cosine_momentum(self.base_momentum, progress)
        _ema(self.target_backbone, self.backbone, m)
        _ema(self.target_projector, self.projector, m)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        v1, v2 = views[:2]
        p1 = self.predictor(self.projector(self.backbone(v1)))
        p2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(v1))
            t2 = self.target_projector(self.target_backbone(v2))
        loss = (2 - 2 * F.cosine_similarity(p1, t2, dim=-1)) + (2 - 2 * F.cosine_similarity(p2, t1, dim=-1))
        return loss.mean()


class DinoHead(nn.Module):
    """DINO projection head: MLP → ℓ2-normalised bottleneck → weight-normalised prototypes (unit-norm rows).

    Shape: (B, D) → (B, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 2048, bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck_dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return x @ F.normalize(self.prototypes, dim=-1).t()


class DINO(SslMethod):
    """DINO. Args: backbone; ``out_dim`` (65536 in the paper), ``hidden_dim``, ``bottleneck_dim``,
    ``student_temp`` (0.1), ``teacher_temp`` (0.04), ``center_momentum`` (0.9), ``base_momentum`` (0.996),
    ``local_crops`` (extra student-only views of ``local_size`` px, area 5–40 %; 0: the two global views only)."""

    name = "dino"

    def __init__(self, backbone: Backbone, *, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 student_temp: float = 0.1, teacher_temp: float = 0.04, center_momentum: float = 0.9,
                 base_momentum: float = 0.996, local_crops: int = 0, local_size: int | None = None) -> None:
        super().__init__(backbone)
        self.head = DinoHead(backbone.dim, out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim)
        self.teacher_backbone = _frozen_copy(backbone)
        self.teacher_head = _frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum, self.base_momentum = center_momentum, base_momentum
        self.local_crops, self.local_size = local_crops, local_size

    def view_options(self, size: int) -> list[ViewOptions]:
        """Two global views (area 40–100 %; one always blurred, one solarised sometimes) + the local crops."""
        glob = [ViewOptions(size=size, scale=(0.4, 1.0), blur_p=1.0),
                ViewOptions(size=size, scale=(0.4, 1.0), blur_p=0.1, solarize_p=0.2)]
        local = ViewOptions(size=self.local_size or size, scale=(0.05, 0.4), blur_p=0.5)
        return glob + [local] * self.local_crops

    def momentum_update(self, progress: float) -> None:
        m = cosine_momentum(self.base_momentum, progress)
        _ema(self.teacher_backbone, self.backbone, m)
        _ema(self.teacher_head, self.head, m)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(v)) for v in views[:2]]
            probs = [F.softmax((t - self.center) / self.teacher_temp, dim=-1) for t in teacher]
        student = [F.log_softmax(self.head(self.backbone(v)) / self.student_temp, dim=-1) for v in views]
        total, pairs = torch.zeros((), device=views[0].device), 0
        for i, p in enumerate(probs):
            for j, s in enumerate(student):
                if i != j:
                    total = total + (-(p * s).sum(dim=-1)).mean()
                    pairs += 1
        if self.training:
            self._update_center(torch.cat(teacher))
        return total / pairs

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        batch = teacher.mean(dim=0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch)
            batch /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch, alpha=1 - self.center_momentum)


METHODS: dict[str, type[SslMethod]] = {"simsiam": SimSiam, "byol": BYOL, "dino": DINO}


def build_method(name: str, backbone: Backbone, **options: object) -> SslMethod:
    """A method of :data:`METHODS` by name (a :class:`ValueError` lists them for an unknown one)."""
    if name not in METHODS:
        raise ValueError(f"unknown self-supervised method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name](backbone, **options)  # type: ignore[arg-type]
