"""``medseg serve``: segment in the browser — a local web server with one page and a JSON API
(:mod:`medseg.serve.app`), one model queued behind a worker thread (:mod:`medseg.serve.worker`), uploads and their
results kept in a temporary folder of its own (:mod:`medseg.serve.session`). Needs the ``serve`` extra."""

from __future__ import annotations

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(model: str = "universal", *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          max_upload_mb: float = 50.0, max_queue: int = 64, max_wait_s: float = 120.0, fast: bool = False,
          keep_specialists: bool = False, say=print) -> None:  # type: ignore[no-untyped-def]
    """Load ``model`` once and serve the page and API on ``host:port`` until interrupted (uvicorn); ``fast`` /
    ``keep_specialists``: the universal model's fast mode (:class:`medseg.inference.universal.UniversalPredictor`).

    The server binds to this machine only unless ``host`` says otherwise (then it warns: anyone who can reach
    the port can upload images). Requests, file names and headers are not logged.
    """
    import uvicorn

    from medseg.models.io import load_model
    from medseg.serve.app import create_app
    from medseg.serve.session import Segmenter

    loaded = load_model(model, device=device)
    segmenter = Segmenter(loaded, device=device, fast=fast, keep_specialists=keep_specialists)
    app = create_app(segmenter, max_upload_mb=max_upload_mb, max_queue=max_queue,
                     max_wait_s=max_wait_s)
    if host not in LOCAL_HOSTS:
        say(f"warning: listening on {host}:{port}: other machines that reach this port can upload images and "
            "read the results; serve on 127.0.0.1 unless you mean it")
    mode = " --fast" if fast else ""
    say(f"medseg serve: {loaded.name}{mode} on http://{'127.0.0.1' if host in LOCAL_HOSTS else host}:{port}/ "
        "(Ctrl+C stops it; uploads are deleted then)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
