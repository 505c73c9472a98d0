"""The CLI's promise — one line naming the file, exit 2, no traceback — tried as a new user would, and the
evaluator never dropping a case silently."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli.main import main
from medseg.data import generate_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("robust") / "d", per_modality=3, size=32, seed=2,
                            modalities=("xray",))


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(n in err for n in needles), err
    return err


def _readonly(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


needs_unprivileged = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                                        reason="root ignores folder permissions")


FOLDER_OUTPUTS = [  # commands whose output is a folder
    lambda d, o: ["data", "convert", str(d), str(o), "--to", "npz"],
    lambda d, o: ["evaluate", str(d), str(d), "-o", str(o)],
    lambda d, o: ["benchmark", "basic_unet", "-o", str(o), "--repeats", "1"],
    lambda d, o: ["demo", "--out", str(o)],
    lambda d, o: ["data", "synth", str(o)],
    lambda d, o: ["predict", "lite_medsam", str(d), "-o", str(o)],
]
FILE_OUTPUTS = [  # commands whose output is a file
    lambda d, o: ["data", "scan", str(d), "--json", str(o)],
    lambda d, o: ["data", "scan", str(d), "--markdown", str(o)],
    lambda d, o: ["data", "split", str(d), "-o", str(o)],
    lambda d, o: ["export", "onnx", "basic_unet", "-o", str(o)],
]
UNWRITABLE = Path("/proc/medseg-cannot-write-here")  # cannot be created, even by root


@pytest.mark.parametrize("argv", FOLDER_OUTPUTS)
def test_folder_output_that_is_a_file_or_unwritable_fails_up_front(argv, data: Path, tmp_path: Path,
                                                                     capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    assert main(argv(data, blocker)) == 2
    _one_line_error(capsys, "blocker", "existing file")
    if Path("/proc").is_dir():
        assert main(argv(data, UNWRITABLE)) == 2
        _one_line_error(capsys, "cannot write")


@pytest.mark.parametrize("argv", FILE_OUTPUTS)
def test_file_output_that_is_a_folder_or_unwritable_fails_up_front(argv, data: Path, tmp_path: Path,
                                                                     capsys) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(argv(data, folder)) == 2
    _one_line_error(capsys, "a_folder", "existing folder")
    if Path("/proc").is_dir():
        assert main(argv(data, UNWRITABLE / "out.csv")) == 2
        _one_line_error(capsys, "cannot write")


@needs_unprivileged
def test_read_only_output_folder(data: Path, tmp_path: Path, capsys) -> None:
    ro = _readonly(tmp_path / "ro")
    assert main(["data", "split", str(data), "-o", str(ro / "m.csv")]) == 2
    _one_line_error(capsys, "ro")


def test_devices_accelerators_yaml_and_weights_env(data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["predict", "lite_medsam", str(data), "--device", "banana", "-o", str(tmp_path / "p")]) == 2
    _one_line_error(capsys, "banana")
    import torch

    if not torch.cuda.is_available():
        assert main(["predict", "lite_medsam", str(data), "--device", "cuda", "-o", str(tmp_path / "p")]) == 2
        _one_line_error(capsys, "CUDA")
        out = tmp_path / "run"
        assert main(["train", f"data.root={data}", f"out_dir={out}", "trainer.accelerator=gpu"]) == 2
        _one_line_error(capsys, "accelerator")
        assert not (out / "config.yaml").exists()  # checked before anything is written
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    assert main(["train", str(bad)]) == 2
    err = _one_line_error(capsys, "bad.yaml", "line")
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv("MEDSEG_WEIGHTS", str(tmp_path / "nowhere"))
    from medseg.errors import MedsegError
    from medseg.weights import fetch_weights

    with pytest.raises(MedsegError, match="MEDSEG_WEIGHTS"):
        fetch_weights("lite_medsam", allow_download=False)


@pytest.fixture
def predictions(data: Path, tmp_path: Path) -> Path:
    """'Predictions' = copies of the ground truth, laid out like ``medseg predict`` writes them."""
    pred = tmp_path / "pred"
    for m in data.rglob("masks/*.png"):
        dest = pred / m.parent.parent.relative_to(data) / m.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(m, dest)
    return pred


def test_evaluate_missing_cases_are_an_error_or_counted(data: Path, predictions: Path, tmp_path: Path,
                                                        capsys) -> None:
    victim = sorted(predictions.rglob("*.png"))[0]
    victim.unlink()
    assert main(["evaluate", str(predictions), str(data), "-o", str(tmp_path / "e0")]) == 2
    _one_line_error(capsys, "no prediction", "--missing")
    assert main(["evaluate", str(predictions), str(data), "-o", str(tmp_path / "e1"), "--missing", "empty"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "e1" / "metrics.csv")))
    assert len(rows) == 3 and sorted(float(r["dice"]) for r in rows)[0] == 0.0
    assert "| missing (scored as empty) | 1 |" in (tmp_path / "e1" / "summary.md").read_text()
    assert main(["evaluate", str(predictions), str(data), "-o", str(tmp_path / "e2"), "--missing", "skip"]) == 0
    summary = (tmp_path / "e2" / "summary.md").read_text()
    assert "| missing (skipped) | 1 |" in summary and victim.name in summary
    assert len(list(csv.DictReader(open(tmp_path / "e2" / "metrics.csv")))) == 2


def test_evaluate_mask_mode_is_strict_by_default(data: Path, predictions: Path, tmp_path: Path, capsys) -> None:
    gt = sorted(data.rglob("masks/*.png"))[0]
    arr = np.asarray(Image.open(gt)).copy()
    arr[arr > 0] = 7
    arr[0, 0] = 2  # a label map {0, 2, 7}
    Image.fromarray(arr).save(gt)
    try:
        assert main(["evaluate", str(predictions), str(data), "-o", str(tmp_path / "e")]) == 2
        _one_line_error(capsys, gt.name, "not binary")
        assert main(["evaluate", str(predictions), str(data), "-o", str(tmp_path / "e"), "--mask-mode",
                     "nonzero"]) == 0
    finally:
        Image.fromarray((arr > 0).astype(np.uint8) * 255).save(gt)


def test_predict_on_error_skip_reports_bad_files(data: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    shutil.copytree(data, src)
    bad = next(src.rglob("images/*.png"))
    bad.write_bytes(b"\x89PNG truncated")
    assert main(["train", f"data.root={data}", f"out_dir={tmp_path / 'run'}", "model.name=basic_unet",
                 "model.options={features: [4, 4, 8, 8, 16, 4]}", "data.img_size=32", "trainer.max_steps=1",
                 "trainer.accelerator=cpu", "trainer.progress_bar=false"]) == 0
    model = tmp_path / "run" / "model"
    capsys.readouterr()
    assert main(["predict", str(model), str(src), "-o", str(tmp_path / "p1")]) == 2
    _one_line_error(capsys, bad.name)
    # exit 1: not everything asked for was produced (the good files were)
    assert main(["predict", str(model), str(src), "-o", str(tmp_path / "p2"), "--on-error", "skip"]) == 1
    err = capsys.readouterr().err
    assert "skipped 1" in err and bad.name in err
    assert len([p for p in (tmp_path / "p2").rglob("*.png") if not p.stem.endswith("_overlay")]) == 2
    meta = json.loads((model / "model.json").read_text())
    meta.pop("sha256")
    (model / "model.json").write_text(json.dumps(meta))
    assert main(["predict", str(model), str(data), "-o", str(tmp_path / "p3")]) == 2
    _one_line_error(capsys, "no sha256")


def test_scan_reports_ignored_npz(tmp_path: Path, capsys) -> None:
    root = generate_dataset(tmp_path / "d", per_modality=2, size=32, modalities=("xray",))
    ds = next(p for p in (root / "xray").iterdir() if p.is_dir())
    np.savez(ds / "extra.npz", imgs=np.zeros((8, 8, 3), np.uint8))
    assert main(["data", "scan", str(root)]) == 0
    assert "npz" in capsys.readouterr().out
