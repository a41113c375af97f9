r"""Conformal prediction sets of ordered classes with a coverage guarantee.

Split conformal prediction turns any model's class probabilities into a *contiguous* range of
classes ``[lower, upper]`` (e.g. "grade 2 to 3") that contains the true class with probability
at least :math:`1 - \alpha`:

1. On held-out calibration data :math:`(p_i, y_i)_{i=1}^n`, compute the conformity scores
   :math:`s_i = s(p_i, y_i)` (:func:`label_scores`).
2. Take :math:`\hat q`, the :math:`\lceil (n+1)(1-\alpha) \rceil`-th smallest score
   (:func:`conformal_quantile`; :math:`+\infty` if that rank exceeds :math:`n`).
3. For a new example, keep the classes with :math:`s(p, y) \le \hat q` plus the anchor class.

If calibration and test examples are exchangeable (e.g. drawn i.i.d. from the same
population), :math:`P(y_{test} \in C(p_{test})) \ge 1 - \alpha` over the draw of calibration and
test data. The guarantee is *marginal*: averaged over examples, not per class and not per input;
a shift between calibration and deployment data voids it. See ``docs/conformal.md``.

Two score functions, both with nested contiguous sets that never are empty (details in
:mod:`emdloss.conformal._scores`): ``"cdf"`` (central CDF-quantile intervals around the
median; the default) and ``"ordinal_aps"`` (grow from the mode towards the more probable
neighbour, Lu et al. 2022). Only torch and numpy are needed; every function accepts numpy arrays or tensors and
returns the same kind.

Examples
--------
>>> import numpy as np
>>> from emdloss.conformal import calibrate, format_set, set_coverage, mean_set_size
>>> rng = np.random.default_rng(0)
>>> probs = rng.dirichlet(np.ones(4), size=500)
>>> labels = np.array([rng.choice(4, p=row) for row in probs])
>>> cal = calibrate(probs[:300], labels[:300], alpha=0.2, method="ordinal_aps")
>>> lower, upper = cal.predict_sets(probs[300:])
>>> bool(set_coverage(lower, upper, labels[300:]) > 0.7), mean_set_size(lower, upper) < 4
(True, True)
>>> format_set(lower[0], upper[0], ["none", "mild", "moderate", "severe"])
'none..moderate'

This module is the package's face: ``__all__`` lists what other packages may use (the argument
checks ``check_alpha``, ``check_method`` and ``check_sets`` included); the underscore modules
behind it are private to the package.
"""

from emdloss.conformal._calibrator import (
    Calibrator,
    calibrate,
    check_sets,
    conformal_quantile,
    format_set,
    mean_set_size,
    quantile_rank,
    set_coverage,
)
from emdloss.conformal._scores import METHODS, check_alpha, check_method, label_scores

__all__ = [
    "METHODS",
    "Calibrator",
    "calibrate",
    "check_alpha",
    "check_method",
    "check_sets",
    "conformal_quantile",
    "format_set",
    "label_scores",
    "mean_set_size",
    "quantile_rank",
    "set_coverage",
]
