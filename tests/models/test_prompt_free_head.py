"""The prompt-free head: ESP-MedSAM's decoding on a frozen encoder's embedding, its classifier, its pretrained start."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model
from medseg.models.esp_medsam import decode_prompt_free
from tests.conftest import SHARED_WEIGHTS, requires_shared_weights, tiny_model_config


def _head():
    torch.manual_seed(0)
    return build_model("prompt_free_head", **tiny_model_config("prompt_free_head")).eval()


def test_head_decodes_as_esp_medsam_and_names_its_task() -> None:
    head = _head()
    emb = torch.randn(3, 32, 16, 16)
    with torch.inference_mode():
        out = head.forward_all(emb)
        logits, _, patch = decode_prompt_free(emb, out.task, prompt_encoder=head.prompt_encoder,
                                                patch_prompt=head.patch_prompt, mask_decoder=head.mask_decoder,
                                                size=64)
        forced = head.forward_all(emb, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(out.logits, logits)
    assert out.logits.shape == (3, 1, 64, 64) and out.task_logits.shape == (3, 2) and patch.shape[:2] == (3, 1)
    assert torch.equal(out.task, out.task_logits.argmax(1)) and forced.task.tolist() == [1, 1, 1]
    # the classifier pools the embedding's tokens: their order does not matter
    perm = torch.randperm(16 * 16)
    shuffled = emb.flatten(2)[:, :, perm].reshape_as(emb)
    torch.testing.assert_close(head.classify(shuffled), head.classify(emb))
    with pytest.raises(ValueError, match="fundus-vessels"):
        head.task_index(["nope"])


def test_tasks_get_their_own_queries() -> None:
    head = _head()
    with torch.no_grad():
        head.mask_decoder.queries[1].add_(1.0)
    emb = torch.randn(1, 32, 16, 16)
    with torch.inference_mode():
        a, b = (head(emb, torch.tensor([t])) for t in (0, 1))
    assert not torch.allclose(a, b)


@requires_shared_weights
def test_pretrained_head_starts_from_litemedsams_decoder() -> None:
    head = build_model("prompt_free_head", tasks=["a", "b"], pretrained=str(SHARED_WEIGHTS))
    sam = build_model("lite_medsam", pretrained=str(SHARED_WEIGHTS))
    for t in range(2):
        torch.testing.assert_close(head.mask_decoder.queries[t], sam.mask_decoder.mask_tokens.weight[0])
    torch.testing.assert_close(head.prompt_encoder.state_dict()["pe_layer.positional_encoding_gaussian_matrix"],
                               sam.prompt_encoder.state_dict()["pe_layer.positional_encoding_gaussian_matrix"])


def test_graft_head_starts_a_students_decoder_from_the_head() -> None:
    from medseg.models.prompt_free_head import graft_head, student_options

    head = _head()
    opts = {**tiny_model_config("esp_medsam"), **student_options(head)}
    with pytest.raises(ValueError, match="SPPG"):  # ESP-MedSAM's own DP encoder cannot take the head's SAM-mask prompt
        graft_head(head, build_model("esp_medsam", **{**opts, "dense_prompt": "conv", "tasks": head.tasks}))
    student = build_model("esp_medsam", **{**opts, "tasks": head.tasks})
    before = {k: v.clone() for k, v in student.state_dict().items()}
    left = graft_head(head, student)
    after, theirs = student.state_dict(), head.state_dict()
    copied = [k for k in theirs if k not in left]
    assert any(k.startswith("mask_decoder.queries") for k in copied)
    assert any(k.startswith("patch_prompt") for k in copied)
    assert all(torch.equal(after[k], theirs[k]) for k in copied)
    # the encoder (and bags) stay the student's own
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("image_encoder."))
    assert all(not k.startswith("image_encoder.") for k in copied)
    with pytest.raises(ValueError, match="tasks"):
        graft_head(head, build_model("esp_medsam", **{**opts, "tasks": list(reversed(head.tasks))}))
