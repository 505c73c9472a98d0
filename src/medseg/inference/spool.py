"""A temporary on-disk store of image embeddings, for inference that needs two passes over a batch of files (batch
routing: classify every image first, segment after) without holding every embedding in memory or running the
encoder twice."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np


class EmbeddingSpool:
    """Arrays written once and read back memory-mapped, in a private temporary folder removed on exit.

    Entries are named by integer keys, never by input file names. Use as a context manager::

        with EmbeddingSpool() as spool:
            out = spool.create(0, (n, 256, 64, 64))   # fill out[...]
            emb = spool.get(0)                        # read-only memmap

    Args:
        dir: where the temporary folder goes (``None``: the system's temporary directory).
    """

    def __init__(self, dir: str | Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="medseg-spool-", dir=dir)
        self.root = Path(self._tmp.name)

    def create(self, key: int, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.memmap:
        """A writable (``shape``) memmap for entry ``key`` (a new entry replaces an old one)."""
        return np.lib.format.open_memmap(self._path(key), mode="w+", dtype=dtype, shape=shape)

    def get(self, key: int) -> np.ndarray:
        """Entry ``key``, read-only and memory-mapped.

        Raises:
            KeyError: no such entry.
        """
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return np.load(path, mmap_mode="r")

    def close(self) -> None:
        self._tmp.cleanup()

    def _path(self, key: int) -> Path:
        return self.root / f"{int(key)}.npy"

    def __enter__(self) -> EmbeddingSpool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
