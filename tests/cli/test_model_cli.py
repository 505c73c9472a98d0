"""End-to-end CLI on synthetic data: train → predict → evaluate → benchmark → export onnx."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli.main import main
from medseg.data import generate_dataset

TINY = ["data.img_size=64", "model.name=resnet_unet",
        "model.options={arch: resnet18, base_width: 8, decoder_channels: [32, 16, 16, 8, 8]}",
        "trainer.max_steps=3", "trainer.batch_size=4", "trainer.accelerator=cpu", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = generate_dataset(root / "data", per_modality=4, size=64, seed=1, modalities=("dermoscopy", "xray"))
    assert main(["train", f"out_dir={root / 'run'}", f"data.root={data}", *TINY]) == 0
    return data, root / "run" / "model"


def test_train_writes_model_folder_logs_and_checkpoints(trained: tuple[Path, Path]) -> None:
    _, model = trained
    run = model.parent
    assert (model / "model.safetensors").is_file() and (model / "model.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert list((run / "logs").glob("version_*/metrics.csv")) and list((run / "tensorboard").glob("version_*"))


def test_predict_and_evaluate(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, model = trained
    pred = tmp_path / "pred"
    assert main(["predict", str(model), str(data), "--out", str(pred), "--batch-size", "3"]) == 0
    masks = sorted(p for p in pred.rglob("*.png") if not p.stem.endswith("_overlay"))
    assert len(masks) == 8 and len(list(pred.rglob("*_overlay.png"))) == 8
    arr = np.asarray(Image.open(masks[0]))
    assert arr.shape == (64, 64) and set(np.unique(arr)) <= {0, 255}
    out = tmp_path / "eval"
    assert main(["evaluate", str(pred), str(data), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 8 and {r["modality"] for r in rows} == {"dermoscopy", "xray"}
    assert {"dice", "iou", "nsd", "hd95", "dataset"} <= set(rows[0])
    assert (out / "boxplots.png").is_file() and "| dermoscopy |" in (out / "summary.md").read_text()


def test_predict_sam_with_box_prompts(tmp_path: Path) -> None:
    from medseg.models import build_model
    from medseg.models.io import save_model_folder
    from tests.conftest import tiny_model_config

    cfg = tiny_model_config("lite_medsam")
    folder = save_model_folder(build_model("lite_medsam", **cfg), tmp_path / "sam", name="lite_medsam", options=cfg,
                               img_size=64)
    data = generate_dataset(tmp_path / "d", per_modality=2, size=48, seed=0, modalities=("dermoscopy",))
    masks = next(data.rglob("masks"))
    assert main(["predict", str(folder), str(data), "--out", str(tmp_path / "p"),
                 "--box-from-masks", str(masks)]) == 0
    assert len(list((tmp_path / "p").rglob("*_overlay.png"))) == 2


def test_benchmark_and_export(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, model = trained
    assert main(["benchmark", str(model), "-b", "1", "-b", "2", "--repeats", "2", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "gflops_per_image" in text and "latency_ms_median" in text
    rows = list(csv.DictReader(open(tmp_path / "benchmark.csv")))
    assert [r["batch"] for r in rows] == ["1", "2"] and float(rows[0]["gflops_per_image"]) > 0
    onnx = tmp_path / "m.onnx"
    assert main(["export", "onnx", str(model), "--out", str(onnx)]) == 0
    assert onnx.is_file() and "ONNX Runtime matches PyTorch" in capsys.readouterr().out


def test_bad_model_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_step: 3\n")
    assert main(["train", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_corrupt_weights_are_refused(trained: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    import shutil

    _, model = trained
    copy = tmp_path / "m"
    shutil.copytree(model, copy)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[:-10] + b"0123456789")
    assert main(["benchmark", str(copy)]) == 2
    assert "sha256" in capsys.readouterr().err


def test_predict_npz_volume_writes_segs(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, model = trained
    rng = np.random.default_rng(0)
    vol = tmp_path / "in" / "CT_case.npz"
    vol.parent.mkdir()
    np.savez_compressed(vol, imgs=rng.integers(0, 255, (3, 40, 52), dtype=np.uint8),
                        spacing=np.array([1.0, 1.0, 2.5]))
    out = tmp_path / "out"
    assert main(["predict", str(model), str(vol), "--out", str(out)]) == 0
    with np.load(out / "CT_case.npz") as z:
        assert z["segs"].shape == (3, 40, 52) and z["segs"].dtype == np.uint16
    assert (out / "CT_case_overlay.png").is_file()


def test_predict_dicom_writes_dicom_mask(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import pydicom

    from tests.data.test_readers import make_dicom

    _, model = trained
    src = make_dicom(tmp_path / "ct.dcm", np.random.default_rng(0).integers(0, 4000, (50, 60)))
    out = tmp_path / "out"
    assert main(["predict", str(model), str(src), "--out", str(out)]) == 0
    ds = pydicom.dcmread(out / "ct.dcm")
    assert ds.pixel_array.shape == (50, 60) and ds.PatientID == "anon"


def test_evaluate_with_model_equals_predict_then_evaluate(trained: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import medseg.evaluation.compare as compare

    data, model = trained
    opts = ["--tile", "32", "--overlap", "0.5", "--tta"]
    assert main(["predict", str(model), str(data), "--out", str(tmp_path / "pred"), *opts]) == 0
    assert main(["evaluate", str(tmp_path / "pred"), str(data), "--out", str(tmp_path / "a")]) == 0
    read: list[Path] = []
    real_read = compare.read_mask
    monkeypatch.setattr(compare, "read_mask", lambda path, *a, **k: (read.append(Path(path)), real_read(path, *a,
                                                                                                        **k))[1])
    assert main(["evaluate", str(data), str(data), "--model", str(model), "--out", str(tmp_path / "b"), *opts]) == 0
    assert read and not any("predictions" in p.parts for p in read)  # scored in memory, not read back
    a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [(r["case"], r["dice"]) for r in a] == [(r["case"], r["dice"]) for r in b]
    assert (tmp_path / "b" / "predictions").is_dir()


def test_patch_trained_multi_target_model_tiles_and_needs_a_target(trained: tuple[Path, Path], tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture) -> None:
    data, _ = trained
    run = tmp_path / "run"
    assert main(["train", f"out_dir={run}", f"data.root={data}", *TINY, "data.patch_size=32",
                 "data.heads=per_target"]) == 0
    assert main(["predict", str(run / "model"), str(data), "--out", str(tmp_path / "p")]) != 0
    assert "choose the target" in capfd.readouterr().err.replace("\n", " ")
    target = sorted(p.name for p in data.glob("*/*") if p.is_dir())[0]
    assert main(["predict", str(run / "model"), str(data), "--out", str(tmp_path / "p"), "--target", target]) == 0
    assert len([p for p in (tmp_path / "p").rglob("*.png") if not p.stem.endswith("_overlay")]) == 8


def test_predict_with_a_router_file_routes_each_image(trained: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import json

    data, model = trained
    router = tmp_path / "routers.json"  # std > -1 always holds: every image goes to b
    router.write_text(json.dumps({"kind": "cmmc-router", "a": "raw", "b": "edge", "features": ["std"],
                                  "routers": {"threshold": {"xray": {"feature": "std", "threshold": -1.0,
                                                                     "b_above": True}}},
                                  "models": {"raw": {"xray": str(model)}, "edge": {"xray": str(model)}}}))
    pred, plain = tmp_path / "pred", tmp_path / "plain"
    xray = next(p for p in data.rglob("xray") if p.is_dir())
    assert main(["predict", str(router), str(xray), "--out", str(pred), "--modality", "xray"]) == 0
    assert "0 images →" in capsys.readouterr().out
    assert main(["predict", str(model), str(xray), "--out", str(plain)]) == 0
    got = sorted(p.relative_to(pred) for p in pred.rglob("*.png"))
    assert got and got == sorted(p.relative_to(plain) for p in plain.rglob("*.png"))
    for rel in got:
        np.testing.assert_array_equal(np.asarray(Image.open(pred / rel)), np.asarray(Image.open(plain / rel)))
    assert main(["predict", str(router), str(xray), "--out", str(tmp_path / "x")]) != 0  # needs --modality


def test_predict_with_a_task_model_needs_no_prompt_and_no_modality(tmp_path: Path, capsys) -> None:
    """The ESP-MedSAM showcase at test scale: a folder of mixed modalities, no box, no modality; every image is
    segmented and named with its task (``tasks.csv``); ``--task`` forces one."""
    from medseg.models import build_model
    from medseg.models.io import save_model_folder
    from tests.conftest import tiny_model_config

    cfg = {**tiny_model_config("esp_medsam"), "tasks": ["dermoscopy-lesion", "xray-lungs"]}
    folder = save_model_folder(build_model("esp_medsam", **cfg), tmp_path / "esp", name="esp_medsam", options=cfg,
                               img_size=64, extra={"targets": cfg["tasks"]})
    data = generate_dataset(tmp_path / "d", per_modality=2, size=48, seed=0, modalities=("dermoscopy", "xray"))
    assert main(["predict", str(folder), str(data), "--out", str(tmp_path / "p")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p" / "tasks.csv")))
    assert len(rows) == 4 and {r["task"] for r in rows} <= set(cfg["tasks"])
    assert "segmented as:" in capsys.readouterr().out
    assert main(["predict", str(folder), str(data), "--out", str(tmp_path / "q"), "--task", "xray-lungs"]) == 0
    assert {r["task"] for r in csv.DictReader(open(tmp_path / "q" / "tasks.csv"))} == {"xray-lungs"}
    assert main(["predict", str(folder), str(data), "--out", str(tmp_path / "r"), "--task", "ct"]) != 0
    assert "unknown task 'ct'" in capsys.readouterr().err
    # evaluate --model segments as predict does and keeps the routing beside the predictions
    assert main(["evaluate", str(data), str(data), "--model", str(folder), "--out", str(tmp_path / "e")]) == 0
    routed = list(csv.DictReader(open(tmp_path / "e" / "predictions" / "tasks.csv")))
    assert sorted(r["image"] for r in routed) == sorted(r["image"] for r in rows)
    assert [r["task"] for r in sorted(routed, key=lambda r: r["image"])] == \
        [r["task"] for r in sorted(rows, key=lambda r: r["image"])]
    assert "segmented as:" in capsys.readouterr().out
