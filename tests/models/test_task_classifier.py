"""The task classifier's heads (:mod:`medseg.models.task_classifier`): an ensemble folds into one head exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.models.task_classifier import TaskClassifier, mean_of_heads


def _head(seed: int, in_dim: int = 6, tasks: int = 4, hidden: int = 5) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    head = TaskClassifier(in_dim=in_dim, num_tasks=tasks, hidden=hidden).head
    with torch.no_grad():  # a trained LayerNorm has an affine of its own
        head[0].weight.uniform_(0.5, 1.5)
        head[0].bias.uniform_(-0.5, 0.5)
    return head.eval()


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_the_folded_head_is_the_mean_of_the_heads_logits(k: int, seed: int) -> None:
    heads = [_head(seed + i) for i in range(k)]
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(seed)) * 3
    folded = mean_of_heads(heads)
    with torch.no_grad():
        want = torch.stack([h(x) for h in heads]).mean(0)
        assert torch.allclose(folded(x), want, atol=1e-5)
    assert folded[1].out_features == 5 * k


def test_a_folded_head_loads_into_a_wider_task_classifier() -> None:
    folded = mean_of_heads([_head(0), _head(1), _head(2)])
    wide = TaskClassifier(in_dim=6, num_tasks=4, hidden=15)
    wide.head.load_state_dict(folded.state_dict())  # the same keys and shapes


def test_heads_that_do_not_match_are_refused() -> None:
    with pytest.raises(ValueError, match="no heads"):
        mean_of_heads([])
    with pytest.raises(ValueError, match="differ"):
        mean_of_heads([_head(0), _head(1, tasks=3)])
