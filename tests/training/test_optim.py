"""Parameter groups with a learning-rate factor per name prefix."""

import pytest
import torch
from torch import nn

from medseg.training.optim import parameter_groups


def _model() -> nn.Module:
    m = nn.Module()
    m.encoder = nn.Linear(2, 2)
    m.head = nn.Linear(2, 1)
    m.head_extra = nn.Linear(1, 1)  # "head" must not match "head_extra"
    m.frozen = nn.Linear(2, 2)
    m.frozen.requires_grad_(False)
    return m


def test_each_prefix_gets_its_factor_and_frozen_parameters_are_left_out() -> None:
    m = _model()
    groups = {g["name"]: g for g in parameter_groups(m, 1e-3, {"head": 10, "encoder.bias": 0})}
    assert groups["head"]["lr"] == pytest.approx(1e-2) and len(groups["head"]["params"]) == 2
    assert groups["encoder.bias"]["lr"] == 0 and groups["encoder.bias"]["params"][0] is m.encoder.bias
    base = groups["base"]["params"]
    assert groups["base"]["lr"] == 1e-3 and any(p is m.encoder.weight for p in base)
    assert any(p is m.head_extra.weight for p in base)
    assert sum(len(g["params"]) for g in groups.values()) == 6  # the frozen layer's 2 tensors are not there
    opt = torch.optim.AdamW(parameter_groups(m, 1e-3, {"head": 10}), lr=1e-3)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-3, 1e-2])


def test_a_prefix_that_names_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"'heads'.*top level: encoder, head"):
        parameter_groups(_model(), 1e-3, {"heads": 10})
    with pytest.raises(ValueError, match="name no trainable"):
        parameter_groups(_model(), 1e-3, {"frozen": 10})
    with pytest.raises(ValueError, match="≥ 0"):
        parameter_groups(_model(), 1e-3, {"head": -1})
