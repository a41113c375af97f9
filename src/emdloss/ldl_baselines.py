r"""Baselines for distribution targets (label-distribution learning), fitted on features.

Three models a user of vote-histogram data would try before a network, each with
``fit(x_train, t_train, x_val, t_val) -> self`` and ``predict(x) -> probs`` (numpy float64
``(n, C)`` rows summing to 1), the hyper-parameter chosen on the validation split only and the
model refitted on nothing else (it keeps the fit on ``x_train``, as the networks keep theirs):

- ``"mean"`` (:class:`MeanDistribution`): the training-mean distribution
  :math:`\bar t = \frac1n \sum_i t_i` for every item (for one-hot targets, the class prior);
- ``"aa_knn"`` (:class:`KNNDistribution`): AA-kNN of Geng's LDL survey, the mean target of the
  :math:`k` nearest training items (Euclidean distance on features standardised with the
  training mean and standard deviation), :math:`k` chosen on validation from a grid;
- ``"linear_kl"`` (:class:`LinearSoftmaxKL`): the maximum-entropy model of SA-BFGS,
  :math:`p(x) = \operatorname{softmax}(W x + b)`, fitted by L-BFGS to the mean KL divergence
  from the targets plus :math:`\frac\lambda2 \|W\|^2`, :math:`\lambda` chosen on validation.

The validation measure is any key of
:data:`emdloss.vocabulary.DISTRIBUTION_METRIC_MODES` (default ``"kl"``), with its
direction. Needs numpy (all) and SciPy (``linear_kl``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emdloss.errors import UserError

__all__ = [
    "DISTRIBUTION_BASELINES",
    "KNNDistribution",
    "LinearSoftmaxKL",
    "MeanDistribution",
    "build_baseline",
]


def _features(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise UserError(f"{name} must have shape (n, d) with n >= 1, got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise UserError(f"{name} has {a.shape[1]} features, but the model was fitted on {dim}")
    if not np.isfinite(a).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(a))[0])
        raise UserError(f"{name}[{i}, {j}] = {a[i, j]} is not finite")
    return a


def _targets(t: Any, name: str, rows: int) -> np.ndarray:
    from emdloss.metrics import check_distribution

    a = check_distribution(np.asarray(t, dtype=np.float64), name).numpy()
    if a.shape[0] != rows:
        raise UserError(f"{name} has {a.shape[0]} rows but the features have {rows}")
    return a / a.sum(axis=1, keepdims=True)


def _check_select(select: str) -> str:
    from emdloss.metrics import DISTRIBUTION_METRIC_MODES

    if select not in DISTRIBUTION_METRIC_MODES:
        raise UserError(
            f"select must be one of {', '.join(DISTRIBUTION_METRIC_MODES)}, got {select!r}"
        )
    return select


def _choose(scores: dict[Any, float], select: str) -> Any:
    """The setting with the best validation value (the first of equals, in the grid's order)."""
    from emdloss.metrics import DISTRIBUTION_METRIC_MODES

    sign = -1.0 if DISTRIBUTION_METRIC_MODES[select] == "max" else 1.0
    return min(scores, key=lambda setting: sign * scores[setting])


def _validation_value(probs: np.ndarray, target: np.ndarray, select: str) -> float:
    from emdloss.metrics import distribution_metrics

    return distribution_metrics(probs, target)[select]


class _Standardiser:
    """Feature mean and standard deviation of the training rows (constant columns scaled by 1)."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 1e-12, scale, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


class MeanDistribution:
    r"""The training-mean distribution :math:`\bar t`, predicted for every item.

    Examples
    --------
    >>> model = MeanDistribution().fit(np.zeros((2, 1)), [[1.0, 0.0], [0.5, 0.5]])
    >>> model.predict(np.zeros((1, 1)))
    array([[0.75, 0.25]])
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.dim_: int | None = None

    def fit(
        self, x_train: Any, t_train: Any, x_val: Any = None, t_val: Any = None
    ) -> MeanDistribution:
        """Store the mean training distribution (validation data is not used)."""
        x = _features(x_train, "x_train")
        t = _targets(t_train, "t_train", x.shape[0])
        self.dim_ = x.shape[1]
        self.mean_ = t.mean(axis=0) / t.mean(axis=0).sum()
        return self

    def predict(self, x: Any) -> np.ndarray:
        """``(n, C)``: the training mean for each of the ``n`` rows of ``x``."""
        if self.mean_ is None:
            raise RuntimeError("MeanDistribution.predict() called before fit()")
        rows = _features(x, "x", self.dim_).shape[0]
        return np.tile(self.mean_, (rows, 1))


class KNNDistribution:
    r"""AA-kNN: the mean target of the :math:`k` nearest training items.

    .. math:: \hat p(x) = \frac1k \sum_{i \in N_k(x)} t_i

    with :math:`N_k(x)` the :math:`k` training items nearest to :math:`x` in Euclidean distance
    on standardised features (equal distances at the :math:`k`-th place broken arbitrarily).

    Parameters
    ----------
    k : int, optional
        A fixed :math:`k`; when omitted, chosen on the validation data from ``ks``.
    ks : sequence of int
        The grid of :math:`k` (values above the training size are dropped).
    select : str
        Validation measure (a key of ``DISTRIBUTION_METRIC_MODES``).

    Attributes
    ----------
    k_ : int
        The :math:`k` used.
    val_scores_ : dict
        ``{k: validation value of select}`` when :math:`k` was chosen.

    Examples
    --------
    >>> x = np.array([[0.0], [0.1], [1.0], [1.1]])
    >>> t = np.array([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.2, 0.8]])
    >>> KNNDistribution(k=2).fit(x, t).predict([[0.05], [1.2]])
    array([[0.9, 0.1],
           [0.1, 0.9]])
    """

    def __init__(
        self,
        k: int | None = None,
        *,
        ks: Sequence[int] = (1, 3, 5, 10, 20, 50, 100),
        select: str = "kl",
    ) -> None:
        for value in ([k] if k is not None else []) + list(ks):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"k must be a positive integer, got {value!r}")
        self.k, self.ks, self.select = k, tuple(ks), _check_select(select)
        self.k_: int | None = None
        self.val_scores_: dict[int, float] = {}

    def fit(self, x_train: Any, t_train: Any, x_val: Any = None, t_val: Any = None) -> Any:
        """Store the standardised training items; choose :math:`k` on ``(x_val, t_val)``."""
        x = _features(x_train, "x_train")
        self._t = _targets(t_train, "t_train", x.shape[0])
        self._std = _Standardiser(x)
        self._x = self._std(x)
        if self.k is not None:
            self.k_ = min(self.k, x.shape[0])
            return self
        if x_val is None or t_val is None:
            raise UserError("KNNDistribution needs x_val and t_val to choose k (or give k)")
        xv = _features(x_val, "x_val", x.shape[1])
        tv = _targets(t_val, "t_val", xv.shape[0])
        grid = sorted({min(k, x.shape[0]) for k in self.ks})
        means = self._neighbour_means(self._std(xv), grid)
        self.val_scores_ = {
            k: _validation_value(m, tv, self.select) for k, m in zip(grid, means, strict=True)
        }
        self.k_ = _choose(self.val_scores_, self.select)
        return self

    def _neighbour_means(self, q: np.ndarray, ks: Sequence[int]) -> list[np.ndarray]:
        """Mean target of the nearest ``k`` training items, for every ``k`` of ``ks``."""
        kmax = max(ks)
        sq_train = (self._x**2).sum(axis=1)
        out = [np.empty((q.shape[0], self._t.shape[1])) for _ in ks]
        step = max(1, 4_000_000 // max(1, self._x.shape[0]))
        for start in range(0, q.shape[0], step):
            block = q[start : start + step]
            d2 = sq_train[None, :] - 2.0 * block @ self._x.T  # + |q|^2, the same for a row
            if kmax < d2.shape[1]:
                near = np.argpartition(d2, kmax - 1, axis=1)[:, :kmax]
            else:
                near = np.tile(np.arange(d2.shape[1]), (d2.shape[0], 1))
            order = np.take_along_axis(d2, near, axis=1).argsort(axis=1, kind="stable")
            near = np.take_along_axis(near, order, axis=1)
            cumulative = np.cumsum(self._t[near], axis=1)  # (rows, kmax, C)
            for i, k in enumerate(ks):
                out[i][start : start + step] = cumulative[:, k - 1] / k
        return out

    def predict(self, x: Any) -> np.ndarray:
        """``(n, C)``: the mean target of the ``k_`` nearest training items of each row."""
        if self.k_ is None:
            raise RuntimeError("KNNDistribution.predict() called before fit()")
        q = self._std(_features(x, "x", self._x.shape[1]))
        return self._neighbour_means(q, [self.k_])[0]


class LinearSoftmaxKL:
    r"""Linear softmax model fitted by KL divergence (SA-BFGS-like), L2 chosen on validation.

    Minimises, over :math:`W` (:math:`C \times d`) and :math:`b`, on standardised features

    .. math:: \frac1n \sum_i \mathrm{KL}\big(t_i \,\big\|\, \operatorname{softmax}(W x_i + b)\big)
              + \frac{\lambda}{2} \|W\|_F^2

    with SciPy's L-BFGS-B and the analytic gradient :math:`\frac1n X^\top (P - T) + \lambda W`;
    the values of :math:`\lambda` are fitted from the largest down, each starting from the last
    solution.

    Parameters
    ----------
    l2 : float, optional
        A fixed :math:`\lambda`; when omitted, chosen on the validation data from ``l2s``.
    l2s : sequence of float
        The grid of :math:`\lambda` (on Movie, 10-fold cross-validation chose 0.3 or 0.1).
    select : str
        Validation measure (a key of ``DISTRIBUTION_METRIC_MODES``).
    max_iter : int
        L-BFGS iterations per :math:`\lambda`.
    tol : float, optional
        SciPy's ``tol`` of L-BFGS-B (its ``ftol`` and ``gtol``); SciPy's defaults when omitted.

    Attributes
    ----------
    l2_ : float
        The :math:`\lambda` used.
    val_scores_ : dict
        ``{lambda: validation value of select}`` when :math:`\lambda` was chosen.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2))
    >>> t = np.exp(np.c_[x[:, 0], -x[:, 0], 0 * x[:, 0]])
    >>> t /= t.sum(axis=1, keepdims=True)
    >>> model = LinearSoftmaxKL(l2=1e-6).fit(x, t)
    >>> bool(np.abs(model.predict(x) - t).max() < 1e-3)
    True
    """

    def __init__(
        self,
        l2: float | None = None,
        *,
        l2s: Sequence[float] = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 1e-3),
        select: str = "kl",
        max_iter: int = 500,
        tol: float | None = None,
    ) -> None:
        for value in ([l2] if l2 is not None else []) + list(l2s):
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise UserError(f"l2 must be a finite number >= 0, got {value!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise UserError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.l2, self.l2s, self.select, self.max_iter = (
            l2,
            tuple(l2s),
            _check_select(select),
            max_iter,
        )
        self.tol = tol
        self.l2_: float | None = None
        self.val_scores_: dict[float, float] = {}
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    def _fit_one(self, x: np.ndarray, t: np.ndarray, l2: float, start: np.ndarray) -> np.ndarray:
        from scipy.optimize import minimize

        n, d = x.shape
        c = t.shape[1]
        entropy = float((t * np.log(np.clip(t, 1e-300, None))).sum() / n)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[: d * c].reshape(d, c), theta[d * c :]
            z = x @ w + b
            z -= z.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            value = entropy - float((t * log_p).sum()) / n + 0.5 * l2 * float((w * w).sum())
            residual = (np.exp(log_p) - t) / n
            grad = np.concatenate([(x.T @ residual + l2 * w).ravel(), residual.sum(axis=0)])
            return value, grad

        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            tol=self.tol,
            options={"maxiter": self.max_iter},
        )
        return np.asarray(result.x)

    def fit(self, x_train: Any, t_train: Any, x_val: Any = None, t_val: Any = None) -> Any:
        """Fit on the standardised training features; choose :math:`\\lambda` on validation."""
        x = _features(x_train, "x_train")
        t = _targets(t_train, "t_train", x.shape[0])
        self._std = _Standardiser(x)
        xs = self._std(x)
        d, c = x.shape[1], t.shape[1]
        # start from the training-mean distribution: W = 0, b = log of the mean
        start = np.concatenate([np.zeros(d * c), np.log(np.clip(t.mean(axis=0), 1e-12, None))])
        if self.l2 is not None:
            self._set(self._fit_one(xs, t, float(self.l2), start), d, c)
            self.l2_ = float(self.l2)
            return self
        if x_val is None or t_val is None:
            raise UserError("LinearSoftmaxKL needs x_val and t_val to choose l2 (or give l2)")
        xv = _features(x_val, "x_val", d)
        tv = _targets(t_val, "t_val", xv.shape[0])
        fitted: dict[float, np.ndarray] = {}
        for l2 in sorted({float(v) for v in self.l2s}, reverse=True):
            start = fitted[l2] = self._fit_one(xs, t, l2, start)
            self._set(start, d, c)
            self.val_scores_[l2] = _validation_value(self.predict(xv), tv, self.select)
        self.l2_ = _choose(self.val_scores_, self.select)
        self._set(fitted[self.l2_], d, c)
        return self

    def _set(self, theta: np.ndarray, d: int, c: int) -> None:
        self.coef_ = theta[: d * c].reshape(d, c).copy()
        self.intercept_ = theta[d * c :].copy()

    def predict(self, x: Any) -> np.ndarray:
        """``(n, C)``: :math:`\\operatorname{softmax}(W x + b)` of the standardised rows."""
        if self.coef_ is None or self.intercept_ is None:
            raise RuntimeError("LinearSoftmaxKL.predict() called before fit()")
        z = self._std(_features(x, "x", self.coef_.shape[0])) @ self.coef_ + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return np.asarray(p / p.sum(axis=1, keepdims=True))


#: The baselines by name, in the order they are reported.
DISTRIBUTION_BASELINES: dict[str, type] = {
    "mean": MeanDistribution,
    "aa_knn": KNNDistribution,
    "linear_kl": LinearSoftmaxKL,
}


def build_baseline(name: str, **options: Any) -> Any:
    """A baseline of :data:`DISTRIBUTION_BASELINES` by name (options passed to its class).

    Examples
    --------
    >>> build_baseline("aa_knn", k=5).k
    5
    """
    if name not in DISTRIBUTION_BASELINES:
        raise UserError(
            f"unknown distribution baseline {name!r}: expected one of "
            f"{', '.join(DISTRIBUTION_BASELINES)}"
        )
    return DISTRIBUTION_BASELINES[name](**options)
