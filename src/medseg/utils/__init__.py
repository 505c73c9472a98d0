"""Small helpers shared across sub-packages (atomic file writes)."""

from medseg.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]
