"""Lightning checkpoint I/O that writes atomically and never unpickles code when loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target folder, then ``os.replace``; ``torch.load`` with
    ``weights_only=True`` (checkpoints hold tensors, numbers, strings and containers only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return torch.load(path, map_location=map_location, weights_only=True)
