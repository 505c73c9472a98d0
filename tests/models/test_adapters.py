"""One adapter per model family (:mod:`medseg.models.adapters`): which family each registered model is, and that
each adapter calls its model as the model's own forward does."""

from __future__ import annotations

import pytest
import torch

from medseg.data.geometry import prompt_free_boxes, square_geometry
from medseg.models import build_model, list_models
from medseg.models.adapters import BoxPrompted, EmbeddingHead, PerTarget, TaskModel, adapter_for
from tests.conftest import TINY_CONFIGS, tiny_model_config

FAMILY = {"basic_unet": PerTarget, "resnet_unet": PerTarget, "vit_unet": PerTarget, "lite_medsam": BoxPrompted,
          "lite_medsam_student": BoxPrompted, "esp_medsam": TaskModel, "esp_medsam_teacher": TaskModel,
          "prompt_free_head": EmbeddingHead, "ensemble": PerTarget}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **tiny_model_config(name)).eval()


def test_every_registered_model_has_a_family_and_its_example_inputs_run() -> None:
    assert set(FAMILY) == {m.name for m in list_models()} == set(TINY_CONFIGS)
    for name, family in FAMILY.items():
        model = _model(name)
        adapter = adapter_for(model)
        assert type(adapter) is family, name
        inputs = adapter.example_inputs(2, 64)
        assert len(inputs) == len(adapter.input_names)
        with torch.inference_mode():
            out = adapter.call(*inputs)
        assert out.shape[0] == 2 and out.shape[-1] == 64, name


def test_each_adapter_calls_its_model_as_the_models_own_forward() -> None:
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        unet = _model("basic_unet")
        torch.testing.assert_close(adapter_for(unet).logits(x), unet(x)[:, :1])
        sam = _model("lite_medsam")
        boxes = torch.from_numpy(prompt_free_boxes([square_geometry(64)] * 2))
        torch.testing.assert_close(adapter_for(sam).logits(x), sam(x, boxes))
        a = adapter_for(sam)
        assert isinstance(a, BoxPrompted)
        low = a.decode(a.encode(x[:1]), boxes[:1])
        torch.testing.assert_close(low, sam.decode(sam.image_encoder(x[:1]), boxes[:1])[0])
        esp = _model("esp_medsam")
        t = adapter_for(esp)
        assert isinstance(t, TaskModel) and t.tasks == list(esp.tasks)
        torch.testing.assert_close(t.logits(x, task=1), esp(x, torch.tensor([1, 1])))
        torch.testing.assert_close(t.logits(x), esp(x))  # the classifier's choice
        torch.testing.assert_close(t.task_logits(x), esp.forward_all(x).task_logits)
        head = _model("prompt_free_head")
        h = adapter_for(head)
        (emb,) = h.example_inputs(2, 64)
        torch.testing.assert_close(h.logits(emb, task=0), head(emb, torch.tensor([0, 0])))
        torch.testing.assert_close(h.task_logits(emb), head.classify(emb))


def test_a_sam_family_model_refuses_windows_it_cannot_take() -> None:
    adapter = adapter_for(_model("lite_medsam"))
    with pytest.raises(ValueError, match="tile=64"):
        adapter.window_logits(32)
    with pytest.raises(ValueError, match="one output"):
        adapter.window_logits(64, channel=1)
    assert adapter.window_logits(64)(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
