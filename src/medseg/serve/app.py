"""``medseg serve``: a FastAPI application — one page (served from the package, no CDN) and a small JSON API.

==========================================  =====================================================================
``GET /``                                   the page: drop images, see the masks, correct with a box, download
``GET /healthz``                            ``{"status": "ok", "model": …, "queued": …}``
``GET /api/models``                         the loaded model, its tasks, whether it takes boxes, the limits
``POST /api/segment``                       multipart ``file`` → the result (task, probability, engine, areas)
``GET /api/results``                        every result of this server
``GET /api/results/{id}``                   one result
``GET /api/results/{id}/image.png``         a slice as shown (``?slice=z``)
``GET /api/results/{id}/mask.png``          a slice's mask, 0/255 PNG (``?slice=z``)
``GET /api/results/{id}/overlay.png``       a slice with the mask outlined
``GET /api/results/{id}/mask``              the mask in the upload's format and geometry (NIfTI affine kept)
``POST /api/results/{id}/box``              ``{"slice": z, "box": [x0, y0, x1, y1]}`` → LiteMedSAM's mask there
``POST /api/results/{id}/undo``             undo the last box
``GET /api/results.csv``                    one row per result: name, task, probability, engine, areas
``GET /api/download.zip``                   every mask, overlay and the CSV
==========================================  =====================================================================

Errors answer ``{"detail": "<file>: <problem>"}``: 400 (unusable file, bad box), 404 (unknown id), 409 (the model
takes no boxes), 413 (over the upload limit), 503 with ``Retry-After`` (the model's queue is full or a job waited too
long). The model runs in one worker thread (:mod:`medseg.serve.worker`), so requests queue for it and the server
keeps answering while it works. No CORS headers are sent: only the page served here may call the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field

from medseg.data.loading import file_stem
from medseg.errors import InvalidInputError, MedsegError
from medseg.serve.session import Result, ResultStore, Segmenter
from medseg.serve.worker import Busy, ModelWorker

STATIC = Path(__file__).parent / "static"
CHUNK = 1 << 20


class BoxRequest(BaseModel):
    """A box prompt on one slice: pixel coordinates of the image as uploaded."""

    slice: int = Field(0, ge=0)
    box: tuple[float, float, float, float]


def create_app(segmenter: Segmenter, *, max_upload_mb: float = 50.0, max_queue: int = 64,
               max_wait_s: float = 120.0, store: ResultStore | None = None) -> FastAPI:
    """The application around one loaded model.

    Args:
        segmenter: reads and segments uploads (:class:`Segmenter`).
        max_upload_mb: larger uploads get 413.
        max_queue, max_wait_s: the model's queue (:class:`ModelWorker`); beyond them, 503 with a retry hint.
        store: where results live (default: a fresh temporary folder, removed at shutdown).
    """
    store = store or ResultStore()
    worker = ModelWorker(max_queue=max_queue, max_wait_s=max_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()
        store.close()  # every upload and mask file goes with the server

    app = FastAPI(title="medseg serve", version=_version(), lifespan=lifespan,
                  description="Prompt-free segmentation of 2-D medical images (and volumes slice by slice), "
                              "with box corrections by LiteMedSAM.")
    app.state.store, app.state.worker, app.state.segmenter = store, worker, segmenter
    limit = int(max_upload_mb * 1024 * 1024)

    async def run(fn: Any) -> Any:
        try:
            fut = worker.submit(fn)
            return await asyncio.wrap_future(fut)
        except Busy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        except (InvalidInputError, MedsegError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None

    def result_or_404(rid: str) -> Result:
        r = store.get(rid)
        if r is None:
            raise HTTPException(404, f"no result {rid!r} on this server (results live until it stops)")
        return r

    def slice_or_400(r: Result, z: int) -> int:
        if not 0 <= z < r.shape[0]:
            raise HTTPException(400, f"{r.name}: slice {z} does not exist (0–{r.shape[0] - 1})")
        return z

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": segmenter.loaded.name, "queued": worker.pending}

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return {"model": segmenter.loaded.name, "tasks": segmenter.tasks, "boxes": segmenter.boxes is not None,
                "max_upload_mb": max_upload_mb}

    @app.post("/api/segment")
    async def segment(request: Request, file: UploadFile = File(...)) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise HTTPException(413, f"{file.filename}: larger than the {max_upload_mb:g} MB upload limit")
        name = Path(file.filename or "upload").name or "upload"
        path = store.new_path(name)
        size = 0
        with open(path, "wb") as fh:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    fh.close()
                    path.unlink(missing_ok=True)
                    raise HTTPException(413, f"{name}: larger than the {max_upload_mb:g} MB upload limit")
                fh.write(chunk)
        try:
            result = await run(lambda: segmenter.segment(path, name))
        except HTTPException:
            path.unlink(missing_ok=True)
            raise
        store.add(result)
        return JSONResponse(result.summary())

    @app.get("/api/results")
    def results() -> list[dict[str, Any]]:
        return [r.summary() for r in store.all()]

    @app.get("/api/results.csv")
    def results_csv() -> Response:
        return Response(_csv(store.all()), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="medseg-results.csv"'})

    @app.get("/api/download.zip")
    async def download_zip() -> Response:
        data = await run(lambda: _zip(store.all()))
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="medseg-results.zip"'})

    @app.get("/api/results/{rid}")
    def one(rid: str) -> dict[str, Any]:
        return result_or_404(rid).summary()

    @app.get("/api/results/{rid}/image.png")
    def image(rid: str, slice: int = Query(0, ge=0)) -> FileResponse:
        r = result_or_404(rid)
        return FileResponse(r.image_file(slice_or_400(r, slice)), media_type="image/png")

    @app.get("/api/results/{rid}/mask.png")
    def mask_png(rid: str, slice: int = Query(0, ge=0)) -> Response:
        r = result_or_404(rid)
        return _png(r.mask(slice_or_400(r, slice)).astype(np.uint8) * 255)

    @app.get("/api/results/{rid}/overlay.png")
    def overlay(rid: str, slice: int = Query(0, ge=0)) -> Response:
        from medseg.ops.boundary import overlay_contours

        r = result_or_404(rid)
        z = slice_or_400(r, slice)
        return _png(overlay_contours(r.image(z), None, r.mask(z)))

    @app.get("/api/results/{rid}/mask")
    def mask_file(rid: str) -> FileResponse:
        r = result_or_404(rid)
        folder = Path(tempfile.mkdtemp(dir=store.root))
        path = Segmenter.mask_file(r, folder)
        return FileResponse(path, filename=path.name)

    @app.post("/api/results/{rid}/box")
    async def box(rid: str, body: BoxRequest) -> dict[str, Any]:
        r = result_or_404(rid)
        if segmenter.boxes is None:
            raise HTTPException(409, f"{segmenter.loaded.name} takes no box prompts (serve --model universal or "
                                     "lite_medsam)")
        await run(lambda: segmenter.correct(r, body.slice, body.box))
        return r.summary()

    @app.post("/api/route-batch")
    async def route_batch() -> dict[str, Any]:
        """Route every result so far as one batch (one dataset): see :meth:`Segmenter.route_as_batch`; the
        changed results' summaries come back under ``results``."""
        if segmenter.loaded.name != "universal":
            raise HTTPException(409, f"{segmenter.loaded.name}: routing as one batch applies to the universal model "
                                     "only")
        out = await run(lambda: segmenter.route_as_batch(store.all()))
        ids = list(dict.fromkeys(c["id"] for c in out["changed"]))
        return {**out, "results": [r.summary() for r in (store.get(i) for i in ids) if r is not None]}

    @app.post("/api/results/{rid}/undo")
    def undo(rid: str) -> dict[str, Any]:
        r = result_or_404(rid)
        if not Segmenter.undo(r):
            raise HTTPException(400, f"{r.name}: nothing to undo")
        return r.summary()

    return app


def _png(arr: np.ndarray) -> Response:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png")


def _csv(results: list[Result]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "file", "slices", "task", "probability", "engine", "area_px", "area_mm2"])
    for r in results:
        s = r.summary()
        w.writerow([r.id, r.name, s["slices"], s["task"] or "", "" if s["probability"] is None else
                    f"{s['probability']:.4f}", s["engine"], s["area_px"],
                    "" if s["area_mm2"] is None else f"{s['area_mm2']:.3f}"])
    return buf.getvalue()


def _zip(results: list[Result]) -> bytes:
    """Every result's mask (upload format), overlay (middle slice) and the CSV, with unique names."""
    from medseg.ops.boundary import overlay_contours

    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, tempfile.TemporaryDirectory() as tmp:
        for r in results:
            mask = Segmenter.mask_file(r, Path(tmp))
            base = mask.name
            while base in used:  # two uploads of one name
                base = f"{r.id[:6]}_{base}"
            used.add(base)
            zf.write(mask, f"masks/{base}")
            z = r.shape[0] // 2
            png = io.BytesIO()
            Image.fromarray(overlay_contours(r.image(z), None, r.mask(z))).save(png, format="PNG")
            zf.writestr(f"overlays/{file_stem(base)}_overlay.png", png.getvalue())
        zf.writestr("results.csv", _csv(results))
    return buf.getvalue()


def _version() -> str:
    from medseg import __version__

    return __version__
