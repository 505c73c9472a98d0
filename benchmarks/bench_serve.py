"""Load check of ``medseg serve`` on loopback: a real server in a child process (``medseg serve``), then N sequential
uploads and M at once (threads), bounded in count and time. Prints latency p50/p95 per phase, errors, and the
server's resident memory before and after (target: no growth above 10 %).

    python benchmarks/bench_serve.py [--model universal] [--sequential 100] [--concurrent 8] [--images DIR]
                                     [--out benchmarks/results]

Images: PNG/JPEG files under ``--images`` (default: the first test images of ``../shared/data``), cycled; synthetic
phantoms without them.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from _common import emit


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _images(folder: Path | None, n: int) -> list[Path]:
    if folder is None:
        shared = Path("../shared/data")
        found = sorted(shared.glob("*/*/images/*"))[::37] if shared.is_dir() else []
        if not found:
            from medseg.data import generate_dataset

            root = generate_dataset(Path(tempfile.mkdtemp()) / "s", per_modality=4, size=256)
            found = sorted(root.glob("*/*/images/*.png"))
    else:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [found[i % len(found)] for i in range(n)]


def _upload(client: httpx.Client, url: str, path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = client.post(url + "/api/segment", files={"file": (path.name, path.read_bytes())}, timeout=600)
    return time.perf_counter() - t0, r.status_code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="universal")
    ap.add_argument("--sequential", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "medseg", "serve", "--model", args.model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client() as client:
            deadline = time.time() + 300
            while time.time() < deadline:
                try:
                    if client.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            else:
                raise SystemExit("the server did not start: " + server.stderr.read().decode()[-2000:])
            images = _images(args.images, args.sequential + args.concurrent + 1)
            _upload(client, url, images[-1])  # warm-up (first call builds caches)
            rss_before = _rss_mb(server.pid)
            seq = [_upload(client, url, p) for p in images[:args.sequential]]
            rss_after_seq = _rss_mb(server.pid)
        results: list[tuple[float, int]] = []
        lock = threading.Lock()

        def one(path: Path) -> None:
            with httpx.Client() as c:
                r = _upload(c, url, path)
            with lock:
                results.append(r)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(p,)) for p in images[args.sequential:-1]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        wall = time.perf_counter() - t0
        rss_after = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    rows = []
    for phase, rs, extra in (("sequential", seq, {}), (f"{args.concurrent} at once", results, {"wall_s": wall})):
        times = sorted(t for t, _ in rs)
        rows.append({"phase": phase, "uploads": len(rs), "errors": sum(code != 200 for _, code in rs),
                     "p50_s": statistics.median(times), "p95_s": times[max(0, round(0.95 * len(times)) - 1)],
                     **extra})
    emit(f"medseg serve {args.model}: loopback load", rows, args.out)
    growth = 100 * (rss_after - rss_before) / rss_before
    emit(f"medseg serve {args.model}: server memory", [{
        "rss_before_mb": rss_before, "rss_after_sequential_mb": rss_after_seq, "rss_after_all_mb": rss_after,
        "growth_percent": growth, "target": "≤ 10 %"}], args.out)


if __name__ == "__main__":
    main()
