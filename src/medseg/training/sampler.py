"""A seeded, rank-sharded sampler and a DataLoader whose position survives a restart (Lightning saves the state of
loaders that implement ``state_dict``/``load_state_dict`` in its checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """Epoch-seeded permutation, split across ranks like ``DistributedSampler``, yielding draw ids
    ``epoch·N + row`` (see :class:`medseg.training.dataset.SegmentationDataset`).

    Args:
        n: dataset length.
        seed, shuffle: permutation ``torch.randperm(n, generator=seed + epoch)`` when shuffling.
        num_replicas, rank: DDP world size and this rank (every rank gets ``ceil(n / num_replicas)`` draws; the
            permutation is padded by wrapping, as DistributedSampler does for training).
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.skip = 0
        self.num_samples = math.ceil(n / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.num_replicas
        order = (order * math.ceil(total / max(self.n, 1)))[:total]
        mine = order[self.rank:total:self.num_replicas]
        skip, self.skip = self.skip, 0
        offset = self.epoch * self.n if self.shuffle else 0
        for row in mine[skip:]:
            yield offset + row


class ResumableLoader(DataLoader):
    """DataLoader over a :class:`ResumableSampler` with ``state_dict``/``load_state_dict``.

    The training step reports progress through :meth:`mark_consumed` (batches fully trained this epoch); on restore
    the sampler skips exactly those batches.
    """

    def __init__(self, dataset: Any, *, sampler: ResumableSampler, batch_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.consumed = 0
        self._epoch_of_consumed = 0

    def mark_consumed(self, batch_idx: int) -> None:
        self.consumed = batch_idx + 1
        self._epoch_of_consumed = self.sampler.epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self._epoch_of_consumed), "consumed_batches": int(self.consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        epoch, consumed = int(state["epoch"]), int(state["consumed_batches"])
        if consumed >= len(self):  # saved after the last batch: the next run starts the next epoch
            epoch, consumed = epoch + 1, 0
        sampler.epoch = epoch
        sampler.skip = consumed * int(self.batch_size or 1)
        self.consumed = consumed
        self._epoch_of_consumed = epoch
