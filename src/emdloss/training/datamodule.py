"""The Lightning data module: the splits of an :class:`emdloss.data.OrdinalDataset` as loaders."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.distributed import DistributedSampler

from emdloss.errors import UserError
from emdloss.training._sampling import EpochShuffleSampler, EpochWeightedSampler, epoch_seed

__all__ = ["OrdinalDataModule", "limit_split"]


def limit_split(dataset: Dataset[Any], limit: int | None, seed: int, stream: int) -> Dataset[Any]:
    """The first ``limit`` samples of a fixed random permutation of ``dataset`` (all if None).

    Parameters
    ----------
    dataset : Dataset
        A sized dataset.
    limit : int or None
        Maximum number of samples.
    seed : int
        Run seed (the subset depends on it and on ``stream`` only).
    stream : int
        Distinguishes the splits.

    Returns
    -------
    Dataset

    Examples
    --------
    >>> subset = limit_split(list(range(10)), 3, seed=0, stream=0)
    >>> len(subset), len(set(subset[i] for i in range(3)))
    (3, 3)
    """
    size = len(dataset)  # type: ignore[arg-type]
    if limit is None or limit >= size:
        return dataset
    rng = np.random.default_rng(epoch_seed(seed, 0, stream=100 + stream))
    indices = np.sort(rng.permutation(size)[:limit])
    return Subset(dataset, indices.tolist())


class OrdinalDataModule(pl.LightningDataModule):
    """Loaders for the train, validation and test splits.

    Shuffling depends only on ``(seed, epoch)``: one process uses
    :class:`~emdloss.training._sampling.EpochShuffleSampler`, several processes a
    :class:`~torch.utils.data.distributed.DistributedSampler` with the run seed; evaluation
    splits are partitioned across processes without padding, so that metrics are exact.

    Parameters
    ----------
    train, val, test : Dataset
        Split datasets (items ``(x, y)`` or ``(x, y, dist)``).
    batch_size : int
        Mini-batch size per process.
    seed : int
        Run seed.
    num_workers : int
        Loader worker processes.

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long))
    >>> dm = OrdinalDataModule(ds, ds, ds, batch_size=2)
    >>> [len(b[0]) for b in dm.train_dataloader()]
    [2, 2, 1]
    """

    def __init__(
        self,
        train: Dataset[Any],
        val: Dataset[Any],
        test: Dataset[Any],
        *,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        weights: Any = None,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        #: Per-item sampling weights of the training split (``vote_weights``), or ``None``.
        self.weights = weights
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer if self._has_trainer() else None
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _has_trainer(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def _loader(self, dataset: Dataset[Any], sampler: Sampler[int]) -> DataLoader[Any]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=False,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        world, rank = self._world()
        sampler: Sampler[int]
        if self.weights is not None:
            if world > 1:
                raise UserError("vote_weights runs in one process; drop it or use one device")
            sampler = EpochWeightedSampler(self.train_set, self.weights, seed=self.seed)  # type: ignore[arg-type]
        elif world > 1:
            sampler = DistributedSampler(
                self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
            )
        else:
            sampler = EpochShuffleSampler(self.train_set, seed=self.seed)  # type: ignore[arg-type]
        return self._loader(self.train_set, sampler)

    def _eval_loader(self, dataset: Dataset[Any]) -> DataLoader[Any]:
        world, rank = self._world()
        indices = list(range(len(dataset)))  # type: ignore[arg-type]
        sampler = _Slice(indices[rank::world])
        return self._loader(dataset, sampler)

    def train_eval_dataloader(self) -> DataLoader[Any]:
        """The training split in order, this process's share (for extra feature passes)."""
        return self._eval_loader(self.train_set)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._eval_loader(self.test_set)


class _Slice(Sampler[int]):
    """A fixed list of indices, in order (this process's share of an evaluation split)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self) -> Any:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
