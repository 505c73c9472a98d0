"""Checks a command runs before its work, so a bad output location or device fails in one line, up front."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import InvalidInputError, MedsegError


def check_output_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if needed and make sure files can be written there.

    Raises:
        InvalidInputError: ``path`` is an existing file, cannot be created, or is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InvalidInputError(p, "output folder is an existing file; choose a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".medseg-write-test-"):
            pass
    except OSError as exc:
        raise InvalidInputError(p, f"cannot write to the output folder ({exc.strerror or exc})") from exc
    return p


@contextlib.contextmanager
def new_output_dir(path: str | Path) -> Iterator[Path]:
    """:func:`check_output_dir`, for the span of a command's work: a folder this call created is removed again if
    nothing was written into it (a failed or empty run leaves no empty folder behind)."""
    p = Path(path)
    existed = p.exists()
    check_output_dir(p)
    try:
        yield p
    finally:
        if not existed and p.is_dir() and not any(p.iterdir()):
            with contextlib.suppress(OSError):
                p.rmdir()


def check_output_file(path: str | Path) -> Path:
    """Make sure ``path`` can be written (atomically, beside itself): its folder exists or can be created and
    is writable, and ``path`` is not a folder.

    Raises:
        InvalidInputError: naming the path and the problem.
    """
    p = Path(path)
    if p.is_dir():
        raise InvalidInputError(p, "output file is an existing folder; give a file name")
    check_output_dir(p.parent)
    if p.exists() and not os.access(p, os.W_OK):
        raise InvalidInputError(p, "output file exists and is read-only")
    return p


def check_device(device: str) -> str:
    """``device`` parsed by torch and available on this machine.

    Raises:
        MedsegError: unknown device string, or an accelerator this machine does not have.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise MedsegError(f"--device {device!r} is not a device torch knows (use cpu, cuda, cuda:1, mps)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MedsegError(f"--device {device}: no CUDA GPU is available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MedsegError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MedsegError(f"--device {device}: Apple MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise MedsegError(f"--device {device}: unsupported device type {dev.type!r} (use cpu, cuda or mps)")
    return device


def check_accelerator(accelerator: str) -> None:
    """``trainer.accelerator`` usable here (Lightning's names: auto, cpu, gpu, cuda, mps, tpu)."""
    import torch

    acc = accelerator.lower()
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise MedsegError(f"trainer.accelerator={accelerator}: no CUDA GPU is available on this machine "
                          "(use trainer.accelerator=cpu or auto)")
    if acc == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MedsegError(f"trainer.accelerator={accelerator}: Apple MPS is not available on this machine")
    if acc not in ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu"):
        raise MedsegError(f"trainer.accelerator={accelerator!r} is not one of auto, cpu, gpu, cuda, mps, tpu")
