"""What a batch command promises: every readable image it is given is an input, output names never collide, the
closing summary counts and names what was skipped, the exit code says whether everything asked for was produced
(0 all, 1 some skipped, 2 an error), options are checked before any work, and a failed run leaves no empty folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.cli.main import main
from medseg.models import build_model
from medseg.models.io import save_model_folder
from tests.conftest import tiny_model_config


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    opts = {k: v for k, v in tiny_model_config("basic_unet").items()}
    return save_model_folder(build_model("basic_unet", **opts), tmp_path_factory.mktemp("m") / "unet",
                             name="basic_unet", options=opts, img_size=64)


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_mask_like_names_are_inputs_and_every_one_is_written(model: Path, tmp_path: Path, capsys) -> None:
    names = ["a_mask", "b_seg", "c_gt", "d_label", "e"]
    for i, n in enumerate(names):
        _png(tmp_path / "in" / f"{n}.png", i)
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 0
    assert "5 input(s): 5 written" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png") if "overlay" not in p.name) == \
        [f"{n}.png" for n in names]


def test_same_case_name_in_two_formats_gets_two_outputs(model: Path, tmp_path: Path, capsys) -> None:
    _png(tmp_path / "in" / "case1.png")
    Image.open(_png(tmp_path / "x.png", 1)).save(tmp_path / "in" / "case1.jpg")
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["case1_jpg.png", "case1_jpg_overlay.png", "case1_png.png", "case1_png_overlay.png"]


def test_an_output_name_clash_is_an_error_before_any_work(model: Path, tmp_path: Path, capsys) -> None:
    a, b = _png(tmp_path / "a" / "x.png"), _png(tmp_path / "b" / "x.png", 1)
    assert main(["predict", str(model), str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(a) in err and str(b) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_catalogues_mask_folder_is_not_segmented_and_the_summary_says_so(model: Path, tmp_path: Path,
                                                                             capsys) -> None:
    _png(tmp_path / "ds" / "images" / "c1.png")
    _png(tmp_path / "ds" / "masks" / "c1.png", 1)
    assert main(["predict", str(model), str(tmp_path / "ds"), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 input(s): 1 written" in out and "1 files in catalogue mask folders" in out


def test_skipped_inputs_are_named_and_the_exit_code_says_so(model: Path, tmp_path: Path, capsys) -> None:
    good = _png(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    before = good.read_bytes()
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--on-error", "skip"]) == 1
    said = capsys.readouterr()
    assert "2 input(s): 1 written" in said.out and "1 skipped" in said.out and "broken.png" in said.err
    assert (tmp_path / "out" / "good.png").is_file() and good.read_bytes() == before
    shutil.rmtree(tmp_path / "in")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"nope")
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out2"),
                 "--on-error", "skip"]) == 1
    assert "0 written" in capsys.readouterr().out and not (tmp_path / "out2").exists()


def test_options_are_checked_before_any_work(model: Path, tmp_path: Path, capsys) -> None:
    _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(out), "--threshold", "1.5"]) == 2
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(out), "--box-from-masks",
                 str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not out.exists()


def test_an_empty_prompt_mask_is_said(tmp_path: Path, capsys, monkeypatch) -> None:
    from tests.training.test_embedding_data import LITE, tiny_lite_medsam_state

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    torch.manual_seed(0)
    sam = save_model_folder(build_model("lite_medsam", img_size=64, **LITE), tmp_path / "sam", name="lite_medsam",
                            options={"img_size": 64, **LITE}, img_size=64)
    _png(tmp_path / "in" / "a.png")
    Image.fromarray(np.zeros((24, 30), np.uint8)).save(_png(tmp_path / "prompts" / "a.png"))
    assert main(["predict", str(sam), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--box-from-masks",
                 str(tmp_path / "prompts")]) == 0
    assert "has no foreground: segmented prompt-free" in capsys.readouterr().err


def test_failed_runs_leave_no_empty_folder(model: Path, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(ckpt))
    assert main(["weights", "import", str(ckpt), "--sha256", "0" * 64, "-o", str(tmp_path / "imported")]) == 2
    assert not (tmp_path / "imported").exists()
    if not torch.cuda.is_available():
        assert main(["evaluate", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "ev"), "--model", str(model),
                     "--device", "cuda"]) == 2
        assert not (tmp_path / "ev").exists()
        cfg = tmp_path / "u.yaml"
        cfg.write_text(f"out_dir: {tmp_path / 'exp'}\ntrainer: {{accelerator: gpu}}\n")
        assert main(["experiment", "universal", str(cfg)]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "exp").exists()


def test_odd_files_get_one_line_naming_them(model: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.npz").write_text("I am text, not an npz archive")
    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "in" / "anim.gif", save_all=True, append_images=frames[1:])
    big = _png(tmp_path / "in" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 720 px > 500: Pillow's decompression-bomb warning
    assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--on-error", "skip"]) == 1
    err = capsys.readouterr().err
    assert "x.npz: cannot read as npz: not a complete zip archive" in err and "unsafe" not in err
    assert "pickle" not in err.replace("never loads pickles", "")
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert any(f"{tmp_path / 'in' / 'anim.gif'}: animated image with 2 frames" in ln for ln in lines), err
    assert any(str(big) in ln and "decompression" in ln.lower() for ln in lines), err


def test_module_form_runs_without_runpy_warning() -> None:
    import subprocess
    import sys

    for module in ("medseg", "medseg.cli.main"):
        run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=True)
        assert run.stdout.startswith("medseg ") and "Warning" not in run.stderr, run.stderr


def test_the_one_time_engine_build_is_said_once_without_exporter_noise(model: Path, tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _png(tmp_path / "in" / "a.png")
    for run in ("first", "second"):
        assert main(["predict", str(model), str(tmp_path / "in"), "-o", str(tmp_path / run), "--engine", "onnx"]) == 0
        said = capsys.readouterr()
        builds = [ln for ln in said.err.splitlines() if "building the ONNX Runtime engine" in ln]
        assert len(builds) == (1 if run == "first" else 0), said.err
        assert "[torch.onnx]" not in said.out + said.err and "torchvision" not in said.out + said.err


def test_scan_of_a_flat_folder_says_it_found_nothing_to_scan(tmp_path: Path, capsys) -> None:
    _png(tmp_path / "flat" / "a.png")
    assert main(["data", "scan", str(tmp_path / "flat")]) == 1
    out = capsys.readouterr().out
    assert "nothing to scan" in out and "directly in the data root are not read" in out


def test_demo_needs_an_image_per_split_for_each_modality(capsys) -> None:
    assert main(["demo", "--per-modality", "2"]) == 2
    assert "per-modality" in capsys.readouterr().err
