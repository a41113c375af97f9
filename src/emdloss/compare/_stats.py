"""Verdicts that respect noise: paired differences over seeds, with a t interval.

Two losses trained on the same seed share the split, the initialisation seed and the batch
order, so their difference on that seed removes most of what the seed alone changes. For paired
values :math:`a_s, b_s` over the :math:`n` seeds (and folds) that both finished,

.. math::

    d_s = a_s - b_s, \\qquad \\bar d = \\frac{1}{n}\\sum_s d_s, \\qquad
    \\mathrm{se} = \\frac{\\mathrm{sd}(d)}{\\sqrt n}, \\qquad
    \\bar d \\pm t_{0.975,\\,n-1}\\,\\mathrm{se}

is the 95 % confidence interval of the mean paired difference (the paired t-test at level 5 %
rejects "no difference" exactly when the interval excludes zero). A loss *beats* another only
then; otherwise the two *tie*. A published number is compared with Welch's interval from both
sides' standard deviations and run counts; without a published spread nothing is claimed.

Where the test rows change from run to run (k-fold cross-validation, or a hold-out drawn from
each seed), the runs' training sets overlap, their differences are correlated, and the plain
interval above is too narrow: it shrinks as :math:`1/\\sqrt n` however few items the data set
has. There the standard error is the corrected resampled one of Nadeau & Bengio (2003; the
"corrected repeated k-fold cv test" of Bouckaert & Frank, 2004),

.. math::

    \\mathrm{se} = \\mathrm{sd}(d)\\,\\sqrt{\\frac1n + \\frac{n_\\text{test}}{n_\\text{train}}},

with :math:`n_\\text{test}/n_\\text{train}` the ratio of a run's test rows to the rows it trained
and selected on (:math:`1/(k-1)` for k folds), and the same :math:`n - 1` degrees of freedom.
On one fixed split (an official split, seeds changing only the initialisation and the batch
order) no correction applies: the verdict is then about that test set.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES, METRIC_MODES

__all__ = [
    "LEVEL",
    "Interval",
    "interval_method",
    "paired_difference",
    "selection_level",
    "t_quantile",
    "welch_difference",
]

#: Confidence level of every interval of a comparison.
LEVEL = 0.95

_Key = TypeVar("_Key", bound=Hashable)


def t_quantile(probability: float, df: float) -> float:
    """Quantile of Student's t distribution (SciPy; ``inf`` without degrees of freedom).

    Examples
    --------
    >>> round(t_quantile(0.975, 29), 4)
    2.0452
    """
    if not df > 0:
        return math.inf
    from scipy.stats import t  # the train extra; only when a verdict is computed

    return float(t.ppf(probability, df))


@dataclass(frozen=True)
class Interval:
    """A difference ``candidate - reference`` with its standard error and confidence interval.

    Attributes
    ----------
    mean, se, low, high : float
        Mean difference, its standard error, and the interval bounds (NaN when ``n < 2``).
    n : int
        Number of pairs (or runs of the candidate for a Welch interval).
    level : float
        Confidence level of ``low, high``: :data:`LEVEL`, or higher where a verdict picked the
        best of several candidates (Bonferroni, see :func:`selection_level`).
    """

    mean: float
    se: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of zero."""
        return self.low > 0 or self.high < 0

    def outcome(self, metric: str) -> str:
        """``"beats"``, ``"ties with"``, ``"loses to"`` (for the candidate) or ``"cannot be
        judged against"`` (fewer than two pairs).

        Examples
        --------
        >>> Interval(-0.1, 0.02, -0.14, -0.06, 10).outcome("mae")
        'beats'
        >>> Interval(-0.01, 0.02, -0.05, 0.03, 10).outcome("mae")
        'ties with'
        """
        if self.n < 2 or math.isnan(self.low):
            return "cannot be judged against"
        if not self.excludes_zero():
            return "ties with"
        mode = METRIC_MODES.get(metric, DISTRIBUTION_METRIC_MODES.get(metric))
        better = self.mean > 0 if mode == "max" else self.mean < 0
        return "beats" if better else "loses to"

    def format(self, digits: int = 3) -> str:
        """``+0.012 ± 0.004 (95% CI [+0.004, +0.020], n=30)``."""
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if math.isnan(self.low):
            return f"{self.mean:+.{digits}f} (n={self.n}, no interval)"
        return (
            f"{self.mean:+.{digits}f} ± {self.se:.{digits}f} "
            f"({_percent(self.level)} CI [{self.low:+.{digits}f}, {self.high:+.{digits}f}], "
            f"n={self.n})"
        )

    def short(self, digits: int = 3) -> str:
        """``+0.012 [+0.004, +0.020]`` for table cells; a ``*`` marks an interval without zero."""
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if math.isnan(self.low):
            return f"{self.mean:+.{digits}f}"
        mark = "*" if self.excludes_zero() else ""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{mark}"


def _percent(level: float) -> str:
    """``95%``, ``99.17%``: the level with as many digits as it needs."""
    return f"{100 * level:.4g}%"


def selection_level(candidates: int, level: float = LEVEL) -> float:
    """Confidence level for a verdict on the best of ``candidates`` (Bonferroni).

    Picking the best of k candidates by its mean and then testing it at 5 % finds a "win" far
    more often than 5 % of the time when none is real; testing it at 5 % / k keeps the chance of
    any false "beats" among the k at most 5 %.

    Examples
    --------
    >>> selection_level(1), round(selection_level(5), 4)
    (0.95, 0.99)
    """
    return 1 - (1 - level) / max(int(candidates), 1)


def interval_method(test_train_ratio: float | None) -> str:
    """The name of the paired test an interval comes from, for the sentences under a table.

    Examples
    --------
    >>> interval_method(None)
    'paired t-test over seeds'
    >>> interval_method(1 / 9)
    'corrected resampled t-test (Nadeau & Bengio; test/train rows 0.111)'
    """
    if test_train_ratio is None:
        return "paired t-test over seeds"
    return f"corrected resampled t-test (Nadeau & Bengio; test/train rows {test_train_ratio:.3f})"


def paired_difference(
    candidate: Mapping[_Key, float],
    reference: Mapping[_Key, float],
    *,
    level: float = LEVEL,
    test_train_ratio: float | None = None,
) -> Interval:
    """Mean paired difference ``candidate - reference`` over the keys (seeds) both have.

    Parameters
    ----------
    candidate, reference : Mapping
        ``{pair key: value}``, e.g. ``{(seed, fold): mae}``; NaN values are left out.
    level : float
        Confidence level of the interval (default :data:`LEVEL`).
    test_train_ratio : float, optional
        Test rows over training (and validation) rows of one run, where the test rows change
        from run to run: the standard error is then Nadeau & Bengio's corrected one (module
        docstring). ``None`` (one fixed split): the plain paired t interval.

    Returns
    -------
    Interval
        With the paired t interval at ``level`` (NaN bounds for fewer than two pairs).

    Examples
    --------
    >>> d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.5, 2: 2.0})
    >>> (round(d.mean, 4), round(d.se, 4), d.n)
    (0.6667, 0.1667, 3)
    >>> paired_difference({0: 0.6, 1: 0.5}, {0: 0.5, 1: 0.4}).outcome("mae")  # two equal diffs
    'cannot be judged against'

    Ten folds: the correction adds :math:`1/9` to :math:`1/n` under the square root.

    >>> c = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.5, 2: 2.0},
    ...                       test_train_ratio=1 / 9)
    >>> round(c.se, 4)  # 0.2887 * sqrt(1/3 + 1/9)
    0.1925
    """
    keys = [k for k in candidate if k in reference]
    diffs = [
        float(candidate[k]) - float(reference[k])
        for k in keys
        if not (math.isnan(float(candidate[k])) or math.isnan(float(reference[k])))
    ]
    n = len(diffs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0, level)
    mean = statistics.fmean(diffs)
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1, level)
    if test_train_ratio is not None and not (
        math.isfinite(test_train_ratio) and test_train_ratio > 0
    ):
        raise ValueError(f"test_train_ratio must be a positive number, got {test_train_ratio!r}")
    se = statistics.stdev(diffs) * math.sqrt(1 / n + (test_train_ratio or 0.0))
    if se == 0.0 and mean != 0.0:
        # Identical differences (a discrete measure, few pairs) leave a t interval no width:
        # the exact sign test judges them instead (all n of one sign: p = 2^(1 - n)), and
        # below its level there is no interval, not a zero-width one that excludes 0.
        if 2.0 ** (1 - n) >= 1.0 - level:
            return Interval(mean, 0.0, math.nan, math.nan, n, level)
    half = t_quantile(0.5 + level / 2, n - 1) * se
    return Interval(mean, se, mean - half, mean + half, n, level)


def welch_difference(
    mean: float, std: float, n: int, other_mean: float, other_std: float, other_n: int
) -> Interval:
    """``mean - other_mean`` with Welch's interval from both standard deviations and counts.

    Used against published rows, whose runs are not paired with ours.

    Examples
    --------
    >>> w = welch_difference(0.40, 0.03, 30, 0.45, 0.03, 30)
    >>> w.excludes_zero(), round(w.se, 4)
    (True, 0.0077)
    """
    if n < 2 or other_n < 2 or math.isnan(std) or math.isnan(other_std):
        return Interval(mean - other_mean, math.nan, math.nan, math.nan, n)
    a, b = std**2 / n, other_std**2 / other_n
    se = math.sqrt(a + b)
    if se == 0:
        return Interval(mean - other_mean, 0.0, mean - other_mean, mean - other_mean, n)
    df = (a + b) ** 2 / (a**2 / (n - 1) + b**2 / (other_n - 1))
    half = t_quantile(0.5 + LEVEL / 2, df) * se
    diff = mean - other_mean
    return Interval(diff, se, diff - half, diff + half, n)
