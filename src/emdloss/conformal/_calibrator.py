r"""Split-conformal calibration: the finite-sample quantile, the calibrator, set summaries."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from emdloss.conformal._scores import (
    anchor,
    check_alpha,
    check_labels,
    check_method,
    check_probs,
    scores_tensor,
    to_tensor,
)

__all__ = [
    "Calibrator",
    "calibrate",
    "check_sets",
    "conformal_quantile",
    "format_set",
    "mean_set_size",
    "quantile_rank",
    "set_coverage",
]

_FORMAT = 1  # version of Calibrator.to_dict's layout


def quantile_rank(n: int, alpha: float) -> int:
    r"""Rank :math:`k = \lceil (n + 1)(1 - \alpha) \rceil` of the conformal quantile among ``n``
    calibration scores; :math:`k > n` means the threshold is :math:`+\infty`.

    ``alpha`` is read as the decimal the user wrote (``0.3`` is 3/10, not the binary float just
    below it), so :math:`(n + 1)(1 - \alpha)` landing on an integer is not pushed up by one by
    rounding.

    Examples
    --------
    >>> quantile_rank(9, 0.1), quantile_rank(99, 0.1), quantile_rank(100, 0.1)
    (9, 90, 91)
    >>> quantile_rank(9, 0.3)  # 10 * 0.7 = 7 exactly
    7
    >>> quantile_rank(5, 0.1)  # ceil(5.4) = 6 > 5: the set must be all classes
    6
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    a = Fraction(repr(check_alpha(alpha)))
    return math.ceil((n + 1) * (1 - a))


def conformal_quantile(scores: Any, alpha: float) -> float:
    r"""The split-conformal threshold :math:`\hat q`: the :math:`k`-th smallest of the ``n``
    calibration scores, :math:`k = \lceil (n + 1)(1 - \alpha) \rceil`, or :math:`+\infty` when
    :math:`k > n` (that is, :math:`n < 1/\alpha - 1`).

    For exchangeable calibration and test scores, :math:`P(s_{test} \le \hat q) \ge 1 - \alpha`,
    and :math:`\le 1 - \alpha + 1/(n + 1)` when the scores have no ties.

    Parameters
    ----------
    scores : Tensor or array-like, shape (n,)
        Conformity scores of the calibration examples at their true labels.
    alpha : float
        Miscoverage level in (0, 1).

    Returns
    -------
    float

    Examples
    --------
    >>> conformal_quantile([0.5, 0.1, 0.9, 0.3], alpha=0.5)  # k = ceil(5 * 0.5) = 3
    0.5
    >>> conformal_quantile([0.5, 0.1, 0.9, 0.3], alpha=0.1)  # k = 5 > 4
    inf
    """
    alpha = check_alpha(alpha)
    s, _ = to_tensor(scores, "scores")
    if s.ndim != 1 or not s.is_floating_point():
        raise ValueError(f"scores must be a 1-D float array, got shape {tuple(s.shape)} {s.dtype}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores must be finite")
    n = s.shape[0]
    k = quantile_rank(n, alpha)
    if k > n:
        return math.inf
    return float(torch.sort(s.detach().to(torch.float64)).values[k - 1])


@dataclass(frozen=True)
class Calibrator:
    r"""A calibrated split-conformal predictor of contiguous ordinal sets.

    Made by :func:`calibrate`; :meth:`predict_sets` keeps, for each example, the classes whose
    score is at most ``qhat``, plus the anchor class (median or mode), as ``[lower, upper]``.

    Attributes
    ----------
    method : str
        Score function, one of :data:`emdloss.conformal.METHODS`.
    alpha : float
        Target miscoverage: sets contain the true class with probability at least ``1 - alpha``.
    qhat : float
        Score threshold; ``inf`` when there were too few calibration points (every set is then
        all classes).
    n : int
        Number of calibration examples.
    num_classes : int
        Number of ordered classes.

    Examples
    --------
    >>> c = Calibrator(method="cdf", alpha=0.1, qhat=0.5, n=100, num_classes=4)
    >>> Calibrator.from_dict(c.to_dict()) == c
    True
    """

    method: str
    alpha: float
    qhat: float
    n: int
    num_classes: int

    def __post_init__(self) -> None:
        check_method(self.method)
        check_alpha(self.alpha)
        if isinstance(self.qhat, bool) or not isinstance(self.qhat, (int, float)):
            raise TypeError(f"qhat must be a float, got {self.qhat!r}")
        if math.isnan(self.qhat):
            raise ValueError("qhat must not be NaN")
        for name in ("n", "num_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    @property
    def all_classes(self) -> bool:
        """Whether every set is all classes (too few calibration points for ``alpha``)."""
        return math.isinf(self.qhat)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``qhat`` is ``None`` for :math:`+\\infty`); see :meth:`from_dict`.

        Examples
        --------
        >>> Calibrator("ordinal_aps", 0.1, float("inf"), 5, 3).to_dict()["qhat"] is None
        True
        """
        return {
            "format": _FORMAT,
            "method": self.method,
            "alpha": self.alpha,
            "qhat": None if self.all_classes else float(self.qhat),
            "n": self.n,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_dict`'s output, checking every field.

        Examples
        --------
        >>> Calibrator.from_dict({"format": 1, "method": "cdf", "alpha": 0.2, "qhat": 0.3,
        ...                       "n": 50, "num_classes": 5}).qhat
        0.3
        >>> Calibrator.from_dict({"method": "cdf"})
        Traceback (most recent call last):
        ...
        ValueError: calibrator data lacks the fields alpha, format, n, num_classes, qhat
        """
        if not isinstance(data, dict):
            raise ValueError(f"calibrator data must be a JSON object, got {type(data).__name__}")
        fields = {"format", "method", "alpha", "qhat", "n", "num_classes"}
        missing = sorted(fields - data.keys())
        if missing:
            raise ValueError(f"calibrator data lacks the fields {', '.join(missing)}")
        if data["format"] != _FORMAT:
            raise ValueError(
                f"calibrator data has format {data['format']!r}; this emdloss reads format "
                f"{_FORMAT}"
            )
        qhat = data["qhat"]
        return cls(
            method=data["method"],
            alpha=data["alpha"],
            qhat=math.inf if qhat is None else qhat,
            n=data["n"],
            num_classes=data["num_classes"],
        )

    def predict_sets(self, probs: Any) -> tuple[Any, Any]:
        """Contiguous prediction sets ``[lower, upper]`` (inclusive class indices).

        Parameters
        ----------
        probs : Tensor or array-like, shape (N, C)
            Class probabilities of the examples to predict, from the same model as the
            calibration probabilities.

        Returns
        -------
        (lower, upper)
            int64 tensors (on ``probs``' device) when ``probs`` is a tensor, else numpy arrays;
            ``lower <= upper`` always (never empty).

        Examples
        --------
        >>> import numpy as np
        >>> c = Calibrator(method="ordinal_aps", alpha=0.1, qhat=0.85, n=100, num_classes=4)
        >>> c.predict_sets(np.array([[0.1, 0.6, 0.2, 0.1], [0.0, 0.05, 0.05, 0.9]]))
        (array([1, 3]), array([2, 3]))
        """
        p, is_tensor = check_probs(probs, self.num_classes)
        n, c = p.shape
        if self.all_classes:
            lower = torch.zeros(n, dtype=torch.int64, device=p.device)
            upper = torch.full((n,), c - 1, dtype=torch.int64, device=p.device)
        else:
            keep = scores_tensor(p, self.method) <= self.qhat
            keep[torch.arange(n, device=p.device), anchor(p, self.method)] = True
            idx = torch.arange(c, device=p.device).expand(n, c)
            lower = torch.where(keep, idx, c).amin(dim=1)
            upper = torch.where(keep, idx, -1).amax(dim=1)
        if is_tensor:
            return lower, upper
        return lower.numpy(), upper.numpy()


def calibrate(probs: Any, labels: Any, alpha: float, method: str = "cdf") -> Calibrator:
    r"""Split-conformal calibration of class probabilities into contiguous ordinal sets.

    Computes each calibration example's score at its true label (see
    :mod:`emdloss.conformal` for the two score functions) and takes the finite-sample
    quantile :math:`\hat q` = the :math:`\lceil (n+1)(1-\alpha) \rceil`-th smallest
    (:func:`conformal_quantile`). If the calibration examples and a new example are
    exchangeable, the set :meth:`Calibrator.predict_sets` gives for the new example contains its
    true class with probability at least :math:`1 - \alpha`, over the draw of both (marginal
    coverage; not per class, not conditional on the input).

    Parameters
    ----------
    probs : Tensor or array-like, shape (n, C)
        Class probabilities of held-out calibration examples (not used for training or model
        selection).
    labels : Tensor or array-like of int, shape (n,)
        Their true classes.
    alpha : float
        Miscoverage level in (0, 1), e.g. 0.1 for 90% sets.
    method : {"cdf", "ordinal_aps"}
        Score function (see :mod:`emdloss.conformal._scores`).

    Returns
    -------
    Calibrator

    Warns
    -----
    UserWarning
        When :math:`n < 1/\alpha - 1`: the quantile rank exceeds ``n`` and every set is all
        classes.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> probs = torch.distributions.Dirichlet(torch.ones(5)).sample((200,))
    >>> labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    >>> cal = calibrate(probs, labels, alpha=0.1, method="cdf")
    >>> cal.n, cal.num_classes, 0.0 <= cal.qhat <= 1.0
    (200, 5, True)
    >>> lower, upper = cal.predict_sets(probs[:3])
    >>> bool((lower <= upper).all())
    True
    """
    method = check_method(method)
    alpha = check_alpha(alpha)
    p, _ = check_probs(probs)
    n, c = p.shape
    y = check_labels(labels, n, c).to(p.device)
    scores = scores_tensor(p, method)[torch.arange(n, device=p.device), y]
    qhat = conformal_quantile(scores, alpha)
    if math.isinf(qhat):
        warnings.warn(
            f"{n} calibration examples are too few for alpha={alpha}: split conformal needs "
            f"n >= 1/alpha - 1 = {1 / alpha - 1:.6g}, so every prediction set will be all {c} "
            "classes",
            UserWarning,
            stacklevel=2,
        )
    return Calibrator(method=method, alpha=alpha, qhat=qhat, n=n, num_classes=c)


def _check_bounds(lower: Any, upper: Any) -> tuple[Tensor, Tensor]:
    lo, _ = to_tensor(lower, "lower")
    hi, _ = to_tensor(upper, "upper")
    for name, t in (("lower", lo), ("upper", hi)):
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(t.shape)}")
    if lo.shape != hi.shape:
        raise ValueError(f"lower has shape {tuple(lo.shape)} but upper {tuple(hi.shape)}")
    bad = lo > hi.to(lo.device)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"set {i} is empty: lower {int(lo[i])} > upper {int(hi[i])}")
    return lo, hi.to(lo.device)


def check_sets(lower: Any, upper: Any, target: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Prediction sets ``[lower, upper]`` and their true classes ``target``, checked.

    Each is a 1-D ``(N,)`` array or tensor of integer class indices, with ``lower <= upper``;
    returned as tensors on ``lower``'s device. A bad argument raises ``TypeError`` or
    ``ValueError`` naming it.

    Examples
    --------
    >>> lo, hi, t = check_sets([0, 1], [1, 1], [1, 2])
    >>> hi.tolist(), t.tolist()
    ([1, 1], [1, 2])
    """
    lo, hi = _check_bounds(lower, upper)
    t, _ = to_tensor(target, "target")
    if t.shape != lo.shape:
        raise ValueError(f"target has shape {tuple(t.shape)} but the sets {tuple(lo.shape)}")
    return lo, hi, t.to(lo.device)


def set_coverage(lower: Any, upper: Any, target: Any) -> float:
    """Share of examples whose true class lies in ``[lower, upper]``.

    Examples
    --------
    >>> set_coverage([0, 1, 2], [1, 1, 3], [1, 2, 3])
    0.6666666666666666
    """
    lo, hi, t = check_sets(lower, upper, target)
    if lo.numel() == 0:
        raise ValueError("coverage of zero examples is undefined")
    return float(((lo <= t) & (t <= hi)).double().mean())


def mean_set_size(lower: Any, upper: Any) -> float:
    """Mean number of classes per set, ``upper - lower + 1``.

    Examples
    --------
    >>> mean_set_size([0, 1, 2], [1, 1, 4])
    2.0
    """
    lo, hi = _check_bounds(lower, upper)
    if lo.numel() == 0:
        raise ValueError("mean set size of zero examples is undefined")
    return float((hi - lo + 1).double().mean())


def format_set(lower: int, upper: int, class_names: list[str] | None = None) -> str:
    """A set as text: ``"moderate..severe"``, or one name when ``lower == upper``.

    Examples
    --------
    >>> format_set(2, 3, ["none", "mild", "moderate", "severe"])
    'moderate..severe'
    >>> format_set(1, 1, ["none", "mild", "moderate", "severe"])
    'mild'
    >>> format_set(0, 4)
    '0..4'
    """
    lo, hi = int(lower), int(upper)
    if lo > hi:
        raise ValueError(f"empty set: lower {lo} > upper {hi}")
    if class_names is not None and not (0 <= lo and hi < len(class_names)):
        raise ValueError(f"set {lo}..{hi} is outside the {len(class_names)} class names")
    a, b = (class_names[lo], class_names[hi]) if class_names is not None else (str(lo), str(hi))
    return a if lo == hi else f"{a}..{b}"
