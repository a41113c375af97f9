"""Resumable shuffling and per-epoch random streams.

A resumed run must see exactly the batches and dropout masks the uninterrupted run would have
seen. Lightning restores the epoch counter from the checkpoint and calls ``set_epoch`` on the
sampler, so both the shuffle order and the global random state are derived from
``(seed, epoch)`` alone instead of from whatever the random generators did before.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import RandomSampler

__all__ = [
    "EpochShuffleSampler",
    "EpochWeightedSampler",
    "epoch_seed",
    "global_epoch_seed",
    "seed_epoch",
]

_MASK = (1 << 63) - 1


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed that depends only on the run seed, the epoch and a stream number.

    Parameters
    ----------
    seed : int
        Run seed.
    epoch : int
        0-based epoch.
    stream : int, default 0
        Separates independent uses (0: shuffling, 1: global random state).

    Returns
    -------
    int
        A non-negative seed.

    Examples
    --------
    >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
    True
    """
    mixed = np.random.SeedSequence([int(seed) & _MASK, int(epoch), int(stream)])
    return int(mixed.generate_state(1, dtype=np.uint64)[0]) & _MASK


def global_epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the global random state in ``epoch`` (:func:`seed_epoch`): what a training
    step draws from it (dropout masks) starts from here.

    Examples
    --------
    >>> global_epoch_seed(0, 1) == epoch_seed(0, 1, stream=1)
    True
    """
    return epoch_seed(seed, epoch, stream=1)


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed Python, NumPy and torch (CPU and CUDA) for one training epoch.

    Parameters
    ----------
    seed : int
        Run seed.
    epoch : int
        0-based epoch.

    Examples
    --------
    >>> seed_epoch(0, 3); a = torch.rand(1)
    >>> seed_epoch(0, 3); bool(torch.equal(a, torch.rand(1)))
    True
    """
    value = global_epoch_seed(seed, epoch)
    random.seed(value)
    # The legacy global generator is what third-party augmentation code tends to draw from.
    np.random.seed(value % (2**32))  # noqa: NPY002
    torch.manual_seed(value)


class EpochShuffleSampler(RandomSampler):
    """A random permutation per epoch that is a pure function of ``(seed, epoch)``.

    It is a :class:`~torch.utils.data.RandomSampler` so that Lightning replaces it by a
    :class:`~torch.utils.data.distributed.DistributedSampler` (same seed, same per-epoch
    reshuffle) under DDP.

    Parameters
    ----------
    data_source : Sized
        The dataset.
    seed : int
        Run seed.

    Examples
    --------
    >>> sampler = EpochShuffleSampler(range(5), seed=0)
    >>> sampler.set_epoch(2); first = list(sampler)
    >>> sampler.set_epoch(2); first == list(sampler) and sorted(first) == [0, 1, 2, 3, 4]
    True
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (Lightning calls this at every epoch start)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch, stream=0))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class EpochWeightedSampler(EpochShuffleSampler):
    r"""``N`` draws with replacement, item :math:`i` with probability :math:`w_i / \sum_j w_j`,
    a pure function of ``(seed, epoch)``.

    Training on these batches minimises, in expectation, the loss weighted by :math:`w_i`
    (``vote_weights``: an item with twice the votes counts twice).

    Examples
    --------
    >>> sampler = EpochWeightedSampler(range(3), torch.tensor([0.0, 1.0, 3.0]), seed=0)
    >>> sampler.set_epoch(1); first = list(sampler)
    >>> sampler.set_epoch(1); first == list(sampler), len(first), 0 in first
    (True, 3, False)
    """

    def __init__(self, data_source: Sized, weights: torch.Tensor, seed: int) -> None:
        super().__init__(data_source, seed)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if (
            w.numel() != len(data_source)
            or not bool(torch.isfinite(w).all())
            or bool((w < 0).any())
        ):
            raise ValueError("weights must be finite, >= 0 and one per item")
        if not float(w.sum()) > 0:
            raise ValueError("weights must not all be 0")
        self.weights = w

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch, stream=0))
        draws = torch.multinomial(
            self.weights, len(self.weights), replacement=True, generator=generator
        )
        yield from draws.tolist()
