"""``medseg serve``'s JSON API with a test client: every route, every refusal, and a mask from the API equal to the
predictor's own on the same file (Dice 1.0)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from medseg.inference.universal import UniversalPredictor
from medseg.models.io import load_model
from medseg.serve.app import create_app
from medseg.serve.session import ResultStore, Segmenter
from tests.inference.test_universal import make_tiny_universal
from tests.training.test_embedding_data import tiny_lite_medsam_state


@pytest.fixture()
def served(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    loaded = load_model(make_tiny_universal(tmp_path))
    store = ResultStore(tmp_path / "server-tmp")
    app = create_app(Segmenter(loaded), max_upload_mb=0.05, store=store)
    with TestClient(app) as client:
        yield client, loaded, store


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


IMAGE = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)


def _upload(client, name: str, data: bytes):
    return client.post("/api/segment", files={"file": (name, data, "application/octet-stream")})


def test_health_models_and_the_page(served) -> None:
    client, _, _ = served
    assert client.get("/healthz").json() == {"status": "ok", "model": "universal", "queued": 0}
    m = client.get("/api/models").json()
    assert m["tasks"] == ["lungs", "vessels"] and m["boxes"] is True and m["max_upload_mb"] == 0.05
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[0]
    for asset in ("app.js", "style.css"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and "cdn" not in r.text.lower()
    assert "/api/segment" in client.get("/openapi.json").json()["paths"]
    assert "access-control-allow-origin" not in {k.lower() for k in page.headers}


def test_a_mask_from_the_api_is_the_predictors(served, tmp_path: Path) -> None:
    client, loaded, _ = served
    r = _upload(client, "../../etc/evil name.png", _png_bytes(IMAGE))
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["name"] == "evil name.png" and res["task"] in ("lungs", "vessels") and res["slices"] == 1
    assert res["area_mm2"] is None and (res["width"], res["height"]) == (52, 40)
    mask = np.asarray(Image.open(io.BytesIO(client.get(f"/api/results/{res['id']}/mask.png").content))) > 0
    ref = UniversalPredictor(loaded.model, min_confidence=0.5).predict([IMAGE])[0]
    assert ref.task == res["task"] and ref.engine == res["engine"]
    inter = np.logical_and(mask, ref.mask).sum()
    dice = 1.0 if mask.sum() + ref.mask.sum() == 0 else 2 * inter / (mask.sum() + ref.mask.sum())
    assert dice == 1.0 and res["area_px"] == int(ref.mask.sum())
    download = client.get(f"/api/results/{res['id']}/mask")
    assert download.status_code == 200 and "evil_name_mask.png" in download.headers["content-disposition"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(download.content))) > 0, ref.mask)
    assert client.get(f"/api/results/{res['id']}/image.png").status_code == 200
    assert client.get(f"/api/results/{res['id']}/overlay.png").status_code == 200
    assert [x["id"] for x in client.get("/api/results").json()] == [res["id"]]
    assert not list(Path("/etc").glob("evil*"))  # the client's name is never a path


def test_box_correction_and_undo(served) -> None:
    client, loaded, _ = served
    res = _upload(client, "a.png", _png_bytes(IMAGE)).json()
    before = client.get(f"/api/results/{res['id']}/mask.png").content
    boxed = client.post(f"/api/results/{res['id']}/box", json={"slice": 0, "box": [5, 5, 30, 25]})
    assert boxed.status_code == 200 and boxed.json()["engine"] == "lite_medsam_box" and boxed.json()["can_undo"]
    from medseg.inference import Predictor

    ref = Predictor(loaded.model.sam, img_size=64).predict([IMAGE], [np.array([[5, 5, 30, 25]], np.float32)])[0]
    got = np.asarray(Image.open(io.BytesIO(client.get(f"/api/results/{res['id']}/mask.png").content))) > 0
    assert np.array_equal(got, ref.mask)
    assert client.post(f"/api/results/{res['id']}/undo").json()["engine"] == res["engine"]
    assert client.get(f"/api/results/{res['id']}/mask.png").content == before
    assert client.post(f"/api/results/{res['id']}/undo").status_code == 400
    assert client.post(f"/api/results/{res['id']}/box", json={"slice": 3, "box": [1, 1, 9, 9]}).status_code == 400
    assert client.post(f"/api/results/{res['id']}/box", json={"slice": 0, "box": [4, 4, 4, 4]}).status_code == 400


def test_nifti_keeps_its_affine_and_reports_mm2(served, tmp_path: Path) -> None:
    client, _, _ = served
    affine = np.diag([0.5, 0.25, 2.0, 1.0])
    path = tmp_path / "vol.nii.gz"
    vol = np.random.default_rng(1).random((30, 20, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, affine), path)
    res = _upload(client, "vol.nii.gz", path.read_bytes()).json()
    assert res["slices"] == 3 and res["spacing_mm"] is not None
    assert res["area_mm2"] == pytest.approx(res["area_px"] * res["spacing_mm"][0] * res["spacing_mm"][1])
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(client.get(f"/api/results/{res['id']}/mask").content)
    img = nib.load(out)
    assert img.shape == (30, 20, 3) and np.allclose(img.affine, affine)
    assert client.get(f"/api/results/{res['id']}/image.png?slice=2").status_code == 200
    assert client.get(f"/api/results/{res['id']}/image.png?slice=3").status_code == 400


def test_dicom_patient_tags_are_never_sent_back(served, tmp_path: Path) -> None:
    from tests.data.test_readers import make_dicom

    client, _, _ = served
    path = tmp_path / "p.dcm"
    make_dicom(path, np.random.default_rng(2).integers(0, 4000, (24, 24)).astype(np.uint16))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID = "Doe^Jane", "SECRET-123"
    ds.save_as(path)
    r = _upload(client, "p.dcm", path.read_bytes())
    assert r.status_code == 200, r.text
    assert "Doe" not in r.text and "SECRET" not in r.text
    mask = client.get(f"/api/results/{r.json()['id']}/mask")
    assert b"Doe^Jane" not in mask.content and b"SECRET-123" not in mask.content
    assert "Doe" not in client.get("/api/results.csv").text


def test_bad_uploads_are_refused_one_by_one(served, tmp_path: Path, monkeypatch) -> None:
    client, _, store = served
    big = _upload(client, "big.png", b"\0" * (60 * 1024))
    assert big.status_code == 413 and "big.png" in big.json()["detail"] and "0.05 MB" in big.json()["detail"]
    for name, data, words in [("text.png", b"not an image", "cannot read"), ("empty.png", b"", "empty"),
                              ("trunc.png", _png_bytes(IMAGE)[:80], "cannot read"),
                              ("notes.txt", b"hello", "unsupported file type '.txt'")]:
        r = _upload(client, name, data)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["detail"].startswith(name) and words in r.json()["detail"], r.text
        assert str(store.root) not in r.text
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40×52 > 1000: a "decompression bomb"
    bomb = _upload(client, "bomb.png", _png_bytes(IMAGE))
    assert bomb.status_code == 400 and "decompression bomb" in bomb.json()["detail"]
    monkeypatch.undo()
    assert _upload(client, "good.png", _png_bytes(IMAGE)).status_code == 200  # the others still work
    assert client.get("/api/results/nope").status_code == 404
    assert len([p for p in store.root.iterdir() if p.is_file()]) == 1  # refused uploads leave no file behind


def test_csv_and_zip_hold_every_result(served) -> None:
    client, _, _ = served
    ids = [_upload(client, n, _png_bytes(IMAGE)).json()["id"] for n in ("x.png", "x.png", "y.jpg")]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/results.csv").text)))
    assert [r["id"] for r in rows] == ids and {"task", "probability", "engine", "area_px", "area_mm2"} <= set(rows[0])
    z = zipfile.ZipFile(io.BytesIO(client.get("/api/download.zip").content))
    names = z.namelist()
    assert "results.csv" in names and len([n for n in names if n.startswith("masks/")]) == 3
    assert len([n for n in names if n.startswith("overlays/")]) == 3 and len(set(names)) == len(names)


def test_a_busy_model_answers_503_with_a_retry_hint(tmp_path: Path, monkeypatch) -> None:
    import threading

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    seg = Segmenter(load_model(make_tiny_universal(tmp_path)))
    gate = threading.Event()
    slow = seg.segment

    def wait_then_segment(path, name):
        gate.wait(10)
        return slow(path, name)

    seg.segment = wait_then_segment
    app = create_app(seg, max_queue=0, store=ResultStore(tmp_path / "t"))
    with TestClient(app) as client:
        done: list[int] = []
        first = threading.Thread(target=lambda: done.append(_upload(client, "a.png", _png_bytes(IMAGE)).status_code))
        first.start()
        import time

        while app.state.worker.pending == 0:
            time.sleep(0.01)
        second = _upload(client, "b.png", _png_bytes(IMAGE))  # one is running, none may wait: refused
        gate.set()
        first.join(10)
        assert second.status_code == 503 and int(second.headers["retry-after"]) >= 1
        assert done == [200]
        assert client.get("/healthz").status_code == 200


def test_results_json_has_no_header_fields(served, tmp_path: Path) -> None:
    client, _, _ = served
    res = _upload(client, "a.png", _png_bytes(IMAGE)).json()
    assert set(res) == {"id", "name", "format", "slices", "height", "width", "task", "probability", "engine",
                        "confident", "area_px", "area_mm2", "spacing_mm", "per_slice", "can_undo"}
    json.dumps(res)


def test_temporary_files_go_with_the_server_and_old_results_are_evicted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    store = ResultStore(tmp_path / "srv", max_results=2)
    app = create_app(Segmenter(load_model(make_tiny_universal(tmp_path))), store=store)
    with TestClient(app) as client:
        ids = [_upload(client, f"{i}.png", _png_bytes(IMAGE)).json()["id"] for i in range(3)]
        assert client.get(f"/api/results/{ids[0]}").status_code == 404  # evicted, its files removed
        assert len([p for p in store.root.iterdir() if p.is_dir()]) == 2
    assert not store.root.exists()


def test_serve_binds_this_machine_unless_told_and_then_warns(tmp_path: Path, monkeypatch) -> None:
    import uvicorn

    from medseg.serve import serve

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    folder = make_tiny_universal(tmp_path)
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    said: list[str] = []
    serve(str(folder), say=said.append)
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["access_log"] is False
    assert not any("warning" in s for s in said)
    serve(str(folder), host="0.0.0.0", say=said.append)
    assert calls[-1]["host"] == "0.0.0.0" and any(s.startswith("warning: listening on 0.0.0.0") for s in said)


def test_the_fast_mode_is_served_only_for_a_universal_model_that_has_one(tmp_path: Path, monkeypatch) -> None:
    from medseg.errors import InvalidInputError

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    fast = Segmenter(load_model(make_tiny_universal(tmp_path / "f", fast=True)), fast=True, keep_specialists=True)
    assert fast.predictor.engines == {"lungs": "head", "vessels": "specialist"}
    with pytest.raises(InvalidInputError, match="no student encoder"):
        Segmenter(load_model(make_tiny_universal(tmp_path / "p")), fast=True)


def test_routing_the_uploads_as_one_dataset_moves_the_ambiguous_one_and_can_be_undone(served) -> None:
    """Five uploads the classifier calls lungs and one it leans to call vessels: routed as one batch, the sixth
    is segmented again as lungs (the predictor's own mask for that task), and Undo brings its first answer back."""
    from tests.inference.test_batch_routing import LOGITS, _images, _scripted

    client, _, _ = served
    segmenter = client.app.state.segmenter
    images = _images()
    _scripted(segmenter.predictor, images, LOGITS)
    ids = []
    for i, img in enumerate(images):
        r = _upload(client, f"case{i}.png", _png_bytes(img))
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert [client.get(f"/api/results/{i}").json()["task"] for i in ids] == ["lungs"] * 5 + ["vessels"]
    before = client.get(f"/api/results/{ids[-1]}/mask.png").content
    out = client.post("/api/route-batch").json()
    assert out["images"] == 6 and out["prior"]["lungs"] > 0.9
    assert [(c["id"], c["from"], c["to"]) for c in out["changed"]] == [(ids[-1], "vessels", "lungs")]
    moved = out["results"][0]
    assert moved["task"] == "lungs" and moved["engine"] == "head" and moved["can_undo"] and not moved["confident"]
    forced = segmenter.predictor.with_task("lungs").predict([images[-1]])[0].mask
    got = np.asarray(Image.open(io.BytesIO(client.get(f"/api/results/{ids[-1]}/mask.png").content))) > 0
    np.testing.assert_array_equal(got, forced)
    assert client.post("/api/route-batch").json()["changed"] == []  # routing again changes nothing
    undone = client.post(f"/api/results/{ids[-1]}/undo").json()
    assert undone["task"] == "vessels" and client.get(f"/api/results/{ids[-1]}/mask.png").content == before
    assert "probs" not in json.dumps(client.get("/api/results").json())


def test_routing_as_one_dataset_is_refused_for_other_models(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    loaded = load_model(make_tiny_universal(tmp_path) / "head")
    app = create_app(Segmenter(loaded), store=ResultStore(tmp_path / "srv"))
    with TestClient(app) as client:
        r = client.post("/api/route-batch")
        assert r.status_code == 409 and "universal model only" in r.json()["detail"]
