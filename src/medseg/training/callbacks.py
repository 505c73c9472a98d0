"""Training callbacks medseg adds to Lightning's."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class CpuTimeBudget(L.Callback):
    """Stop training once this process has used ``max_cpu_seconds`` of CPU time (user + system, all threads),
    counted across restarts (the consumed time is saved in checkpoints).

    A wall-clock limit (Lightning's ``max_time``) buys less training on a busy machine; CPU time measures the work
    done, so a budget such as "30 minutes on 2 cores" (3,600 CPU-seconds) gives the same run on a quiet and on a
    shared machine. Checked after every training batch; with DDP each rank counts its own process.
    """

    def __init__(self, max_cpu_seconds: float) -> None:
        if max_cpu_seconds <= 0:
            raise ValueError("max_cpu_seconds must be positive")
        self.max_cpu_seconds = float(max_cpu_seconds)
        self.consumed_before = 0.0
        self._start: float | None = None

    @property
    def consumed(self) -> float:
        """CPU-seconds used so far by training (this process since it started training, plus earlier runs)."""
        return self.consumed_before + (time.process_time() - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.consumed >= self.max_cpu_seconds:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, float]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.consumed_before = float(state.get("consumed", 0.0))
