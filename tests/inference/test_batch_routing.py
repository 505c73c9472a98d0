"""Batch routing of the universal model: the images segmented together share the task prior EM estimates from their
tempered posteriors; an image the classifier alone finds ambiguous takes the batch's task, its mask is what that
task's engine gives, and the two passes run the encoder once per image (embeddings spooled to disk, then removed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.inference.spool import EmbeddingSpool
from medseg.inference.universal import UniversalPredictor, default_routing, routing_temperature_of
from medseg.models.io import load_model
from medseg.routing.label_shift import adapt_prior, adjust_posteriors, temper
from tests.inference.test_universal import make_tiny_universal
from tests.training.test_embedding_data import tiny_lite_medsam_state

#: per-image task logits (lungs, vessels): five clear "lungs", one leaning "vessels" a little
LOGITS = [[3.0, 0.0]] * 5 + [[0.0, 0.4]]


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    return make_tiny_universal(tmp_path)


def _images(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, (36 + 2 * i, 44, 3), dtype=np.uint8) for i in range(n)]


def _scripted(pred: UniversalPredictor, images: list[np.ndarray], logits: list[list[float]]) -> list[int]:
    """Make ``pred``'s classifier answer ``logits[i]`` for image ``i`` (matched by its embedding); counts encoder
    passes in the returned list's length."""
    embs = torch.cat([pred._encode([img])[0] for img in images]).flatten(1)
    table = torch.tensor(logits)
    passes: list[int] = []

    def task_logits(emb: torch.Tensor) -> torch.Tensor:
        idx = torch.cdist(emb.flatten(1).float(), embs).argmin(1)
        return table[idx]

    encode = pred._encode

    def counted(chunk: list[np.ndarray]):  # type: ignore[no-untyped-def]
        passes.append(len(chunk))
        return encode(chunk)

    pred._head.task_logits = task_logits  # type: ignore[method-assign]
    pred._encode = counted  # type: ignore[method-assign]
    return passes


def test_an_ambiguous_image_takes_the_batch_task(folder: Path) -> None:
    model = load_model(folder).model
    images = _images()
    by_image = UniversalPredictor(model, engine="eager", min_confidence=0.5)
    batch = UniversalPredictor(model, engine="eager", min_confidence=0.5, routing="batch", routing_temperature=0.5)
    _scripted(by_image, images, LOGITS)
    passes = _scripted(batch, images, LOGITS)
    alone = by_image.predict(images)
    together = batch.predict(images)
    assert [p.task for p in alone] == ["lungs"] * 5 + ["vessels"]
    assert [p.task for p in together] == ["lungs"] * 6
    assert sum(passes) == len(images)  # the encoder ran once per image; the second pass read the spool
    # what the library's EM says, and each mask is the chosen task's engine on that image
    probs = torch.tensor(LOGITS).softmax(1).double().numpy()
    routes = adjust_posteriors(temper(probs, 0.5), adapt_prior(temper(probs, 0.5)).prior).argmax(1)
    assert [model.tasks[k] for k in routes] == [p.task for p in together]
    forced = by_image.with_task("lungs").predict(images[-1:])[0]
    np.testing.assert_allclose(together[-1].prob, forced.prob, atol=1e-5)
    for a, b in zip(alone[:5], together[:5], strict=True):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-5)
    # the reported probability is the classifier's own for the task taken: the overruled image is flagged unsure
    assert together[-1].task_probability == pytest.approx(probs[-1, 0], abs=1e-5)
    assert not together[-1].confident and all(p.confident for p in together[:5])


def test_a_single_image_or_a_fixed_task_routes_as_alone(folder: Path) -> None:
    model = load_model(folder).model
    images = _images()
    batch = UniversalPredictor(model, engine="eager", routing="batch")
    _scripted(batch, images, LOGITS)
    assert batch.predict(images[-1:])[0].task == "vessels"  # a batch of one: its own most probable task
    assert not batch.with_task("lungs").batch_routed
    assert batch.predict([]) == []
    with pytest.raises(ValueError, match="2 embeddings for 1 images"):
        batch.predict(images[:1], embeddings=np.zeros((2, 1, 1, 1), np.float32), task_prior=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="unknown routing"):
        UniversalPredictor(model, routing="folder")
    with pytest.raises(ValueError, match="positive"):
        UniversalPredictor(model, routing_temperature=0.0)


def test_auto_routing_shares_the_prior_only_when_one_task_holds_a_majority(folder: Path) -> None:
    """``auto`` is ``batch`` when the batch's EM prior has a task at ``routing_min_share`` or more, and ``image``
    otherwise: the same ambiguous image takes the batch's task in a batch of one task, and keeps its own in a batch
    split between the two tasks (gate 0.9, since with two tasks one always holds half)."""
    model = load_model(folder).model
    images = _images()
    auto = UniversalPredictor(model, engine="eager", routing="auto", routing_temperature=0.5)
    passes = _scripted(auto, images, LOGITS)
    assert auto.batch_routed and [p.task for p in auto.predict(images)] == ["lungs"] * 6
    assert sum(passes) == len(images)
    split = [[3.0, 0.0]] * 3 + [[0.0, 3.0]] * 2 + [[0.0, 0.4]]
    strict = UniversalPredictor(model, engine="eager", routing="auto", routing_temperature=0.5, routing_min_share=0.9)
    _scripted(strict, images, split)
    assert [p.task for p in strict.predict(images)] == ["lungs"] * 3 + ["vessels"] * 3
    probs = torch.tensor(split).softmax(1).double().numpy()
    assert adapt_prior(temper(probs, 0.5)).prior.max() < 0.9  # the gate closed
    with pytest.raises(ValueError, match="routing_min_share"):
        UniversalPredictor(model, routing="auto", routing_min_share=0.0)


def test_auto_is_the_default_of_the_model_folder_and_image_of_the_fast_mode(folder: Path) -> None:
    assert UniversalPredictor.from_folder(str(folder)).routing == "auto"
    assert UniversalPredictor.from_folder(str(folder), routing="image").routing == "image"
    assert default_routing() == "auto" and default_routing(fast=True) == "image"


def test_the_cli_routes_a_folder_as_one_batch_and_leaves_no_spool(folder: Path, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    from PIL import Image

    from medseg.cli.main import main
    from medseg.experiments.universal_report import read_table

    spool_root = tmp_path / "tmp"
    spool_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_root))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, img in enumerate(_images(4)):
        Image.fromarray(img).save(inputs / f"case{i}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    outs = {}
    for routing in ("image", "batch", "auto", None, "window"):
        out = tmp_path / str(routing)
        if routing == "window":  # batch routing in windows of 2 files: two spools, each removed
            monkeypatch.setattr("medseg.inference.files.ROUTING_WINDOW", 2)
        flag = [] if routing is None else ["--routing", "batch" if routing == "window" else routing]
        assert main(["predict", str(folder), str(inputs), "-o", str(out), *flag, "--on-error", "skip"]) == 1
        assert "broken.png" in capsys.readouterr().err
        rows = read_table(out / "tasks.csv")
        assert len(rows) == 4 and {r["task"] for r in rows} <= {"lungs", "vessels"}
        outs[routing] = rows
    assert not list(spool_root.glob("medseg-spool-*"))
    tasks = {k: [(r["task"], r["probability"]) for r in rows] for k, rows in outs.items()}
    assert tasks[None] == tasks["auto"]  # the default
    assert tasks["auto"] in (tasks["batch"], tasks["image"])
    # one task dominates this batch of random images; batch routing never splits off fewer than image routing does
    assert len({r["task"] for r in outs["batch"]}) <= len({r["task"] for r in outs["image"]})
    assert main(["predict", str(folder / "head"), str(inputs / "case0.png"), "-o", str(tmp_path / "x"),
                 "--routing", "batch"]) == 2
    assert "--routing applies to the universal model only" in capsys.readouterr().err


def test_the_spool_keys_by_number_reads_back_and_cleans_up(tmp_path: Path) -> None:
    with EmbeddingSpool(dir=tmp_path) as spool:
        out = spool.create(3, (2, 4, 5, 5))
        out[:] = np.arange(200, dtype=np.float32).reshape(2, 4, 5, 5)
        out.flush()
        back = spool.get(3)
        np.testing.assert_array_equal(back, np.arange(200, dtype=np.float32).reshape(2, 4, 5, 5))
        assert [p.name for p in spool.root.iterdir()] == ["3.npy"]
        with pytest.raises(KeyError):
            spool.get(4)
        root = spool.root
    assert not root.exists()


def test_the_model_folder_names_its_routing_temperature(folder: Path) -> None:
    assert routing_temperature_of({}) == 1.0
    meta = {"routing_temperature": {"main": 0.4, "fast": 0.5}}
    assert routing_temperature_of(meta) == 0.4 and routing_temperature_of(meta, fast=True) == 0.5
    assert UniversalPredictor.from_folder(str(folder)).routing_temperature == 1.0
