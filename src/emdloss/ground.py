"""Ground distances between classes: fixed ordinal ones and ones learned from features.

Kept in one module: the fixed and the learned ground distance share their argument checks,
:class:`LearnedGroundDistance` (about 390 of the 640 lines) is one class built on
:func:`centroid_ground_distance`, and about 45% of the length is numpydoc docstrings.

Two kinds of ground distance are provided:

* :func:`ordinal_ground_distance`, the fixed :math:`|x_i - x_j|^p` of ordered classes;
* :class:`LearnedGroundDistance`, the matrix of Hou, Yu & Samaras (arXiv 1611.05916, the
  authors' ``update_cost_matrix``), learned from the class centroids of the network's own
  penultimate features, with its functional core :func:`centroid_ground_distance` and the
  SciPy-compatible rank transform :func:`row_percentile_ranks`.

The learned matrix is meant as the ``cost_matrix`` of
:func:`emdloss.functional.cost_matrix_emd` (the authors' ``cost_matrix_loss``). It has
negative entries for near classes and 1 on the diagonal, so it is a training surrogate, not a
decision cost: for decoding under a cost use :func:`ordinal_ground_distance` or your own cost
with :func:`emdloss.decoding.decode` ``(rule="bayes")``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from emdloss import _validation as V

__all__ = [
    "LearnedGroundDistance",
    "centroid_ground_distance",
    "ordinal_ground_distance",
    "row_percentile_ranks",
]

Mode = Literal["rank", "raw"]
_MODES = ("rank", "raw")
_PRIORS = ("ordinal", "uniform")


def _check_num_classes(num_classes: int) -> int:
    return V.check_num_classes(num_classes, minimum=1)


def _check_mu_omega(mu: float, omega: float) -> tuple[float, float]:
    mu, omega = float(mu), float(omega)
    if not (math.isfinite(mu) and 0.0 <= mu < 1.0):
        raise ValueError(f"mu must be in [0, 1), got {mu}")
    if not (math.isfinite(omega) and omega > 0.0):
        raise ValueError(f"omega must be a finite number > 0, got {omega}")
    return mu, omega


def _check_mode(mode: str) -> str:
    return V.check_choice("mode", mode, _MODES)


def ordinal_ground_distance(
    num_classes: int,
    *,
    positions: Sequence[float] | Tensor | None = None,
    power: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Ground distance between ordered classes, :math:`D_{ij} = |x_i - x_j|^p`.

    .. math::

        D_{ij} = |x_i - x_j|^{p}, \qquad x_i = i \text{ unless ``positions`` is given.}

    With ``power=1`` this is the ground distance under which the EMD of two distributions on
    the line is :math:`\sum_k |P_k - T_k| (x_{k+1} - x_k)`. Used with
    :func:`emdloss.decoding.decode` (``rule="bayes"``), ``power=1`` gives the decision that
    minimises expected absolute error and ``power=2`` the one for squared error.

    Parameters
    ----------
    num_classes : int
        Number of classes :math:`C \ge 1`.
    positions : sequence of float or Tensor, optional
        Strictly increasing class positions :math:`x_1 < \dots < x_C` (e.g. age-group
        midpoints). Default ``0, 1, ..., C - 1``.
    power : float
        Exponent :math:`p > 0`.
    dtype, device : optional
        Of the result (default: the default dtype, or that of ``positions`` if it is a
        floating tensor).

    Returns
    -------
    Tensor
        ``(C, C)`` symmetric matrix with zero diagonal.

    Examples
    --------
    >>> ordinal_ground_distance(3)
    tensor([[0., 1., 2.],
            [1., 0., 1.],
            [2., 1., 0.]])
    >>> ordinal_ground_distance(3, positions=[1.0, 5.0, 10.0], power=2.0)[0]
    tensor([ 0., 16., 81.])
    """
    num_classes = _check_num_classes(num_classes)
    power = float(power)
    if not (math.isfinite(power) and power > 0.0):
        raise ValueError(f"power must be a finite number > 0, got {power}")
    if positions is None:
        x = torch.arange(num_classes, dtype=dtype or torch.get_default_dtype(), device=device)
    else:
        x = torch.as_tensor(positions, device=device)
        if dtype is not None:
            x = x.to(dtype)
        elif not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        x = V.as_class_vector(x, "positions", num_classes, x)
        with V.validation(True):  # a matrix built once: always worth the one sync
            V.check_positions_values(x)
    return (x[:, None] - x[None, :]).abs().pow(power)


def row_percentile_ranks(values: Tensor) -> Tensor:
    r"""Percentile rank of every entry within its row, as a fraction in :math:`(0, 1]`.

    Matches ``scipy.stats.percentileofscore(row, row[j], kind="rank") / 100`` for every
    entry: with :math:`L` the number of entries of the row smaller than the value, :math:`R`
    the number smaller or equal and :math:`n` the row length,

    .. math::

        \operatorname{rank}_{ij} = \frac{L_{ij} + R_{ij} + 1}{2n},

    i.e. the 1-based rank divided by :math:`n`, with ties given the average of their ranks.
    Implemented by sorting, :math:`O(n^2 \log n)` for an ``(m, n)`` input.

    Parameters
    ----------
    values : Tensor
        ``(m, n)`` real matrix, no NaN.

    Returns
    -------
    Tensor
        ``(m, n)`` ranks, in the dtype of ``values`` (floating) or the default dtype.

    Examples
    --------
    >>> row_percentile_ranks(torch.tensor([[0.0, 3.0, 1.0, 3.0]]))
    tensor([[0.2500, 0.8750, 0.5000, 0.8750]])
    """
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-D matrix, got shape {tuple(values.shape)}")
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        raise ValueError("values must not contain NaN")
    out_dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    n = values.shape[1]
    if n == 0:
        return torch.empty(values.shape, dtype=out_dtype, device=values.device)
    ordered = values.sort(dim=1).values.contiguous()
    query = values.contiguous()
    below = torch.searchsorted(ordered, query, right=False)
    at_or_below = torch.searchsorted(ordered, query, right=True)
    # Each value occurs in its own row, so at_or_below > below: SciPy's "+1" branch always holds.
    ranks = (below + at_or_below + 1).to(torch.float64) / (2.0 * n)
    return ranks.to(out_dtype)


def centroid_ground_distance(
    centroids: Tensor,
    *,
    mu: float = 0.5,
    omega: float = 1.0,
    mode: Mode = "rank",
) -> Tensor:
    r"""The authors' cost matrix from class centroids (steps 4 to 6 of ``update_cost_matrix``).

    With :math:`c_i` the centroid of class :math:`i` and :math:`d_{ij} = \lVert c_i - c_j
    \rVert_2`,

    .. math::

        R_{ij} = \begin{cases}
            \operatorname{rank}_j(d_{i\cdot})^{\omega} & \text{mode="rank" (the paper)} \\
            \left(d_{ij} / \max_k d_{ik}\right)^{\omega} & \text{mode="raw"}
        \end{cases}
        \qquad
        CM_{ij} = \frac{R_{ij} + R_{ji}}{2} - \mu, \qquad CM_{ii} = 1,

    where :math:`\operatorname{rank}` is :func:`row_percentile_ranks` (SciPy
    ``percentileofscore(kind="rank") / 100``, ties averaged; the row includes the diagonal
    distance 0). In ``"raw"`` mode a row whose distances are all 0 gives :math:`R = 0`.

    Parameters
    ----------
    centroids : Tensor
        ``(C, F)`` class centroids (the authors: means of L1-normalised features).
    mu : float
        Shift in :math:`[0, 1)`; paper: 0.5 (with ``omega=1``) or 0.25 (with ``omega=2``).
    omega : float
        Exponent :math:`> 0`.
    mode : {"rank", "raw"}
        ``"rank"``: the paper's row-wise percentile ranks (only the order of the distances
        matters); ``"raw"``: the distances divided by their row maximum (keeps how much
        farther a class is).

    Returns
    -------
    Tensor
        ``(C, C)`` symmetric cost matrix in the dtype of ``centroids``.

    Examples
    --------
    Centroids on a line in class order give costs growing with :math:`|i - j|`:

    >>> c = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> centroid_ground_distance(c, mu=0.5, omega=1.0)
    tensor([[1.0000, 0.0625, 0.3750, 0.5000],
            [0.0625, 1.0000, 0.1250, 0.3750],
            [0.3750, 0.1250, 1.0000, 0.0625],
            [0.5000, 0.3750, 0.0625, 1.0000]])
    """
    mu, omega = _check_mu_omega(mu, omega)
    _check_mode(mode)
    if centroids.ndim != 2:
        raise ValueError(f"centroids must be (C, F), got shape {tuple(centroids.shape)}")
    if not centroids.is_floating_point():
        centroids = centroids.to(torch.get_default_dtype())
    if not bool(torch.isfinite(centroids).all()):
        raise ValueError("centroids must be finite")
    # The exact (non-matmul) path: the diagonal is exactly 0 and equal distances tie exactly.
    work = centroids.to(torch.float64)
    dists = torch.cdist(work, work, compute_mode="donot_use_mm_for_euclid_dist")
    if mode == "rank":
        r = row_percentile_ranks(dists)
    else:
        row_max = dists.amax(dim=1, keepdim=True)
        r = torch.where(row_max > 0, dists / row_max.clamp_min(torch.finfo(dists.dtype).tiny), 0.0)
    r = r.pow(omega)
    cm = (r + r.T) / 2.0 - mu
    cm.fill_diagonal_(1.0)
    return cm.to(centroids.dtype)


class LearnedGroundDistance(nn.Module):
    r"""Ground-distance matrix learned from class centroids of features (Hou et al. 2016).

    Accumulates per-class sums of per-sample L1-normalised features with :meth:`update` and
    builds the authors' cost matrix with :meth:`compute` (see
    :func:`centroid_ground_distance` for the formula):

    .. math::

        \hat f = f / \lVert f \rVert_1, \qquad
        c_k = \frac{\sum_{n: y_n = k} \hat f_n}{|\{n: y_n = k\}|}, \qquad
        CM = \operatorname{sym}\!\left(\operatorname{rank}(\lVert c_i - c_j \rVert)^{\omega}
        \right) - \mu, \quad CM_{ii} = 1.

    The current matrix is the buffer :attr:`matrix`; statistics and matrix are buffers, so
    they are saved in ``state_dict`` (checkpoints) and follow ``.to(device)``.

    Parameters
    ----------
    num_classes : int
        Number of classes :math:`C`.
    mu : float
        Shift in :math:`[0, 1)` (paper: 0.5 or 0.25).
    omega : float
        Exponent :math:`> 0` (paper: 1 or 2).
    mode : {"rank", "raw"}
        ``"rank"`` (paper): row-wise percentile ranks of the centroid distances; ``"raw"``:
        the distances divided by their row maximum.
    momentum : float in (0, 1], optional
        ``None`` (paper): each :meth:`compute` replaces the matrix. Otherwise, after the first
        :meth:`compute`, ``matrix = (1 - momentum) * matrix + momentum * new`` (BatchNorm's
        convention: the weight of the new estimate).
    require_nonnegative : bool
        The paper's features are non-negative (after ReLU) and normalised by their sum. If
        True (default) negative features raise ``ValueError``; if False they are normalised
        by their L1 norm :math:`\sum_d |f_d|`.
    normalize : bool
        Per-sample L1 normalisation (paper: True). Samples whose features are all zero carry
        no direction and are skipped.
    prior : {"ordinal", "uniform"} or Tensor
        The matrix before the first :meth:`compute`, also kept for classes never seen:
        ``"ordinal"`` is what :meth:`compute` gives for centroids on a line in class order
        (costs grow with :math:`|i - j|`); ``"uniform"`` is what it gives when all classes
        are equally far apart (for classes without an order); a ``(C, C)`` tensor is used as
        given.
    feature_dim : int, optional
        Feature dimension :math:`F`; if ``None`` it is set by the first :meth:`update` (and
        by ``load_state_dict``).
    dist_sync : bool
        When ``torch.distributed`` is initialised, :meth:`compute` all-reduces the sums and
        counts over ``process_group`` so that every rank gets the identical matrix (all ranks
        must then call :meth:`compute` together).
    process_group : optional
        Group for the all-reduce (default: the world).

    Notes
    -----
    Classes absent from the data so far: the centroid pipeline runs on the present classes
    only (each row is ranked among the present classes, so it still spans :math:`(0, 1]`),
    and the rows and columns of absent classes keep their current values (the prior until a
    class has been seen once). No NaN is produced; if no class is present :meth:`compute`
    leaves the matrix unchanged.

    Examples
    --------
    >>> ground = LearnedGroundDistance(3)
    >>> feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    >>> ground.update(feats, torch.tensor([0, 0, 1, 2]))
    >>> ground.compute()
    tensor([[1.0000, 0.1667, 0.5000],
            [0.1667, 1.0000, 0.3333],
            [0.5000, 0.3333, 1.0000]])
    """

    feature_sums: Tensor
    class_counts: Tensor
    prior_matrix: Tensor
    matrix: Tensor
    num_computes: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        mu: float = 0.5,
        omega: float = 1.0,
        mode: Mode = "rank",
        momentum: float | None = None,
        require_nonnegative: bool = True,
        normalize: bool = True,
        prior: Literal["ordinal", "uniform"] | Tensor = "ordinal",
        feature_dim: int | None = None,
        dist_sync: bool = True,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.mu, self.omega = _check_mu_omega(mu, omega)
        self.mode: Mode = _check_mode(mode)  # type: ignore[assignment]
        if momentum is not None:
            momentum = float(momentum)
            if not (0.0 < momentum <= 1.0):
                raise ValueError(f"momentum must be None or in (0, 1], got {momentum}")
        self.momentum = momentum
        self.require_nonnegative = bool(require_nonnegative)
        self.normalize = bool(normalize)
        self.dist_sync = bool(dist_sync)
        self.process_group = process_group
        if feature_dim is not None and (
            isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1
        ):
            raise ValueError(f"feature_dim must be None or an int >= 1, got {feature_dim!r}")
        self.register_buffer(
            "feature_sums", torch.zeros(num_classes, feature_dim or 0, dtype=torch.float64)
        )
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.float64))
        prior_matrix = self._prior_matrix(prior)
        # Not persistent: it is rebuilt from the constructor's arguments.
        self.register_buffer("prior_matrix", prior_matrix, persistent=False)
        self.register_buffer("matrix", prior_matrix.clone())
        self.register_buffer("num_computes", torch.zeros((), dtype=torch.long))

    # -- set-up ------------------------------------------------------------------------------

    def _prior_matrix(self, prior: str | Tensor) -> Tensor:
        c = self.num_classes
        dtype = torch.get_default_dtype()
        if isinstance(prior, Tensor):
            if prior.shape != (c, c):
                raise ValueError(f"prior must have shape ({c}, {c}), got {tuple(prior.shape)}")
            if not bool(torch.isfinite(prior).all()):
                raise ValueError("prior must be finite")
            return prior.detach().to(dtype).clone()
        if prior == "ordinal":
            points = torch.arange(c, dtype=torch.float64)[:, None]
        elif prior == "uniform":
            points = torch.eye(c, dtype=torch.float64)
        else:
            raise ValueError(
                f"prior must be one of {_PRIORS} or a ({c}, {c}) tensor, got {prior!r}"
            )
        return centroid_ground_distance(points, mu=self.mu, omega=self.omega, mode=self.mode).to(
            dtype
        )

    @property
    def feature_dim(self) -> int | None:
        """The feature dimension, or ``None`` before the first :meth:`update`."""
        return int(self.feature_sums.shape[1]) or None

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, mu={self.mu}, omega={self.omega}, "
            f"mode={self.mode!r}, momentum={self.momentum}, feature_dim={self.feature_dim}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The feature dimension may be unknown at construction: take it from the checkpoint.
        key = prefix + "feature_sums"
        incoming = state_dict.get(key)
        if isinstance(incoming, Tensor) and incoming.shape != self.feature_sums.shape:
            if self.feature_dim is None and incoming.ndim == 2:
                self.feature_sums = torch.zeros(
                    incoming.shape, dtype=self.feature_sums.dtype, device=self.feature_sums.device
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # -- statistics --------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, *, ignore_index: int = -100) -> None:
        r"""Add a batch of features to the per-class sums.

        Parameters
        ----------
        features : Tensor
            ``(N, F)`` features (the penultimate layer; non-negative unless
            ``require_nonnegative=False``). Detached; never receives gradients.
        labels : Tensor
            ``(N,)`` class indices in ``[0, C)`` (entries equal to ``ignore_index`` are
            skipped), or ``(N, C)`` non-negative class weights (soft targets: each sample adds
            to every class in proportion to its weight).
        ignore_index : int
            Label value to skip (as in the losses).

        Notes
        -----
        The checks on values (finite, non-negative features, labels in range) follow
        :func:`emdloss.set_validation`: switched off, ``update`` does no host
        synchronisation on a GPU, and out-of-range labels are no longer detected. Like the
        losses' checks they are skipped while :func:`torch.compile` traces.

        Examples
        --------
        >>> g = LearnedGroundDistance(2)
        >>> g.update(torch.tensor([[2.0, 2.0], [1.0, 3.0]]), torch.tensor([0, 1]))
        >>> g.feature_sums
        tensor([[0.5000, 0.5000],
                [0.2500, 0.7500]], dtype=torch.float64)
        """
        c = self.num_classes
        if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
            raise TypeError("features and labels must be tensors")
        if features.ndim != 2:
            raise ValueError(f"features must be (N, F), got shape {tuple(features.shape)}")
        n, f = features.shape
        if labels.shape[:1] != (n,) or labels.ndim not in (1, 2):
            raise ValueError(
                f"labels must be (N,) or (N, C) with N={n}, got shape {tuple(labels.shape)}"
            )
        if f == 0:
            raise ValueError("features must have at least one column, got F=0")
        if self.feature_dim is not None and f != self.feature_dim:
            raise ValueError(f"features have {f} columns, expected feature_dim={self.feature_dim}")
        soft = labels.ndim == 2
        if soft and labels.shape[1] != c:
            raise ValueError(
                f"soft labels must be (N, {c}) for num_classes={c}, got {tuple(labels.shape)}"
            )
        if not soft and (labels.is_floating_point() or labels.dtype == torch.bool):
            raise TypeError(f"class-index labels must be an integer tensor, got {labels.dtype}")
        device = self.feature_sums.device
        feats = features.detach().to(device, torch.float64)
        labels = labels.detach().to(device)
        if V.values_checked() and n > 0:  # not while torch.compile traces (as the losses)
            self._check_values(feats, labels, ignore_index)
        if self.feature_dim is None:  # first batch: every check passed, now fix F
            self.feature_sums = torch.zeros(c, f, dtype=self.feature_sums.dtype, device=device)
        if self.normalize:
            norms = feats.abs().sum(dim=1, keepdim=True)
            feats = feats / norms.clamp_min(torch.finfo(feats.dtype).tiny)
            # All-zero features (e.g. a dead ReLU layer) have no direction: skip the sample.
            usable = norms[:, 0] > 0
        else:
            usable = torch.ones(n, dtype=torch.bool, device=device)
        if soft:
            weights = labels.to(torch.float64) * usable[:, None]
            self.feature_sums += weights.T @ feats
            self.class_counts += weights.sum(dim=0)
        else:
            # index_add_ costs O(N F), unlike a dense (N, C) one-hot matmul (C can be 1000);
            # masking by weight (not boolean indexing) avoids a host synchronisation.
            w = (usable & (labels != ignore_index)).to(torch.float64)
            # Ignored entries point at class 0 with weight 0; out-of-range labels (possible only
            # with validation off) still fail inside index_add_ rather than land in a class.
            index = torch.where(labels == ignore_index, 0, labels)
            self.feature_sums.index_add_(0, index, feats * w[:, None])
            self.class_counts.index_add_(0, index, w)

    def _check_values(self, feats: Tensor, labels: Tensor, ignore_index: int) -> None:
        """Data-dependent checks (one host synchronisation each on a GPU)."""
        c = self.num_classes
        if not bool(torch.isfinite(feats).all()):
            raise ValueError("features must be finite (found NaN or inf)")
        low = float(feats.min())
        if self.require_nonnegative and low < 0.0:
            raise ValueError(
                f"features must be non-negative (the paper's L1 normalisation needs "
                f"post-ReLU features), got a minimum of {low}; pass "
                f"require_nonnegative=False to normalise by the L1 norm instead"
            )
        if labels.ndim == 2:
            w = labels.to(torch.float64)
            if not bool(torch.isfinite(w).all()) or float(w.min()) < 0.0:
                raise ValueError("soft labels must be finite and non-negative")
            return
        keep = labels != ignore_index
        bad = labels[keep & ((labels < 0) | (labels >= c))]
        if bad.numel() > 0:
            raise ValueError(
                f"labels must be in [0, {c - 1}] (or ignore_index={ignore_index}), "
                f"got {int(bad[0])}"
            )

    def _synced_statistics(self) -> tuple[Tensor, Tensor]:
        """Sums and counts, all-reduced over the process group when running distributed."""
        sums, counts = self.feature_sums, self.class_counts
        if not (
            self.dist_sync
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        ):
            return sums, counts
        # Ranks that have seen no batch yet do not know F: agree on it first.
        local = sums.shape[1]
        dims = torch.tensor([local, -local if local else -(2**62)], device=sums.device)
        dist.all_reduce(dims, op=dist.ReduceOp.MAX, group=self.process_group)
        f_max, f_min = int(dims[0]), -int(dims[1])
        if f_max and f_min != f_max:
            raise ValueError(f"feature_dim differs between ranks ({f_min} vs {f_max})")
        if local != f_max:
            sums = torch.zeros(self.num_classes, f_max, dtype=sums.dtype, device=sums.device)
        packed = torch.cat([sums.reshape(-1), counts])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
        c = self.num_classes
        return packed[: c * f_max].reshape(c, f_max), packed[c * f_max :]

    def centroids(self) -> tuple[Tensor, Tensor]:
        """Class centroids of the statistics so far (synced when distributed).

        Returns
        -------
        (Tensor, Tensor)
            ``(C, F)`` centroids (rows of absent classes are 0) and the ``(C,)`` boolean mask
            of the classes present.

        Examples
        --------
        >>> g = LearnedGroundDistance(3)
        >>> g.update(torch.tensor([[1.0, 3.0]]), torch.tensor([2]))
        >>> g.centroids()[1]
        tensor([False, False,  True])
        """
        sums, counts = self._synced_statistics()
        present = counts > 0
        cents = sums / counts.clamp_min(torch.finfo(counts.dtype).tiny)[:, None]
        return cents, present

    @torch.no_grad()
    def compute(self) -> Tensor:
        """Rebuild :attr:`matrix` from the statistics so far and return a copy of it.

        Does not clear the statistics (call :meth:`reset` for that, e.g. once per epoch as
        the authors, who rebuilt the matrix from a fresh pass each epoch). When distributed,
        every rank must call it (collective all-reduce).

        Returns
        -------
        Tensor
            ``(C, C)`` cost matrix (detached copy of :attr:`matrix`).

        Examples
        --------
        >>> g = LearnedGroundDistance(3, prior="uniform")
        >>> g.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 2]))
        >>> g.compute()  # class 1 never seen: its row and column keep the prior
        tensor([[1.0000, 0.3333, 0.5000],
                [0.3333, 1.0000, 0.3333],
                [0.5000, 0.3333, 1.0000]])
        """
        cents, present = self.centroids()
        idx = present.nonzero().flatten()
        if idx.numel() > 0:
            block = centroid_ground_distance(
                cents[idx], mu=self.mu, omega=self.omega, mode=self.mode
            )
            new = self.matrix.to(torch.float64).clone()
            new[idx[:, None], idx[None, :]] = block
            if self.momentum is not None and int(self.num_computes) > 0:
                new = (1.0 - self.momentum) * self.matrix.to(torch.float64) + self.momentum * new
                new.fill_diagonal_(1.0)
            self.matrix.copy_(new.to(self.matrix.dtype))
            self.num_computes += 1
        return self.matrix.detach().clone()

    def reset(self, *, matrix: bool = False) -> None:
        """Clear the accumulated sums and counts (the matrix stays unless ``matrix=True``).

        Parameters
        ----------
        matrix : bool
            Also reset :attr:`matrix` to the prior and the compute counter to 0.

        Examples
        --------
        >>> g = LearnedGroundDistance(2)
        >>> g.update(torch.ones(1, 3), torch.tensor([1]))
        >>> g.reset()
        >>> g.class_counts
        tensor([0., 0.], dtype=torch.float64)
        """
        self.feature_sums.zero_()
        self.class_counts.zero_()
        if matrix:
            self.matrix.copy_(self.prior_matrix)
            self.num_computes.zero_()

    def forward(self) -> Tensor:
        """Return the current matrix (the buffer itself, no copy)."""
        return self.matrix
