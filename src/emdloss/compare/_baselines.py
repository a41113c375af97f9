"""Baselines a user would pick instead of a network, scored on the same splits and rules.

For every seed (and fold) of a data set, on exactly the splits its runs used (the same loader,
seed, limits and standardisation, through :func:`emdloss.training._build.load_data`):

- ``baseline:prior``: the training class frequencies predicted for every sample
  (:func:`emdloss.metrics.class_prior`), decoded with every prediction rule: under ``argmax`` the
  most common training class, under ``median`` the median training class (the trivial
  predictors of :func:`emdloss.metrics.trivial_baselines`);
- on tables, ``baseline:logreg``: scikit-learn's multinomial ``LogisticRegression``, its inverse
  regularisation ``C`` chosen on the validation split from :data:`LOGREG_C` (the same
  ``--select`` metric as the losses);
- on tables, ``baseline:ordinal_logit``: the cumulative-logit (proportional odds) model of
  statsmodels' ``OrderedModel`` (no hyper-parameter).

Each model's class probabilities go through the same rules as a network's
(:meth:`emdloss.training.module.OrdinalTask.decode_all`) and the same metrics, and the
``validated`` rule is chosen on the validation split as for the runs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from emdloss.compare._records import METRIC_KEYS, VALIDATED_RULE
from emdloss.vocabulary import METRIC_MODES

__all__ = ["BASELINE_PREFIX", "LOGREG_C", "baseline_metrics", "is_baseline"]

#: Loss-column prefix of baseline rows in results.csv and the summary.
BASELINE_PREFIX = "baseline:"
#: Inverse regularisation strengths of the logistic regression, chosen on validation.
LOGREG_C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)


def is_baseline(name: str) -> bool:
    """Whether a results row belongs to a baseline (``baseline:...``).

    Examples
    --------
    >>> is_baseline("baseline:logreg"), is_baseline("ce")
    (True, False)
    """
    return name.startswith(BASELINE_PREFIX)


def _inputs(split: Any) -> Any:
    import torch

    if len(split) == 0:
        raise ValueError("empty split")
    return torch.stack([split.input(i) for i in range(len(split))]).double().numpy()


def _score(
    probs: Any, target: Any, num_classes: int, positions: Any
) -> dict[str, dict[str, float]]:
    """Metrics of every prediction rule for class probabilities ``probs`` ``(n, C)``."""
    import torch

    from emdloss.decoding import decode
    from emdloss.ground import ordinal_ground_distance
    from emdloss.vocabulary import RULES

    p = torch.as_tensor(probs, dtype=torch.float64)
    p = p / p.sum(dim=1, keepdim=True)
    y = torch.as_tensor(target, dtype=torch.long)
    cost = ordinal_ground_distance(num_classes, positions=positions).to(p)
    out: dict[str, dict[str, float]] = {}
    for rule in RULES:
        if rule == "bayes":
            preds = decode(p, rule, ground_distance=cost)
        elif rule == "expected" and positions is not None:
            preds = decode(p, rule, positions=positions)
        else:
            preds = decode(p, rule)
        metric = _metric(num_classes, None if positions is None else tuple(map(float, positions)))
        metric.reset()
        metric.update(p.float(), y, preds=preds)
        values = metric.compute()
        out[rule] = {key: float(values[key]) for key in METRIC_KEYS}
    return out


@functools.lru_cache(maxsize=8)
def _metric(num_classes: int, positions: tuple[float, ...] | None) -> Any:
    """One :class:`~emdloss.metrics.OrdinalMetrics` per class count and positions, reset before
    each use: building a torchmetrics object costs more than scoring a baseline (issue 20:
    432 of them were two fifths of the default suite's baselines); the numbers are the same."""
    from emdloss.metrics import OrdinalMetrics

    return OrdinalMetrics(num_classes, positions=None if positions is None else list(positions))


def _full_probs(probs: Any, classes: Any, num_classes: int) -> Any:
    # Classes missing from the training split get probability 0.
    import numpy as np

    full = np.zeros((probs.shape[0], num_classes))
    full[:, np.asarray(classes, dtype=np.int64)] = probs
    return full


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if METRIC_MODES[metric] == "max" else a < b


def _with_validated(
    val: Mapping[str, Mapping[str, float]],
    test: Mapping[str, Mapping[str, float]],
    metric: str,
) -> dict[str, dict[str, float]]:
    # As for the runs: the rule best on validation (ties keep the earlier rule, argmax first).
    chosen = None
    for rule in val:
        if chosen is None or _better(metric, val[rule][metric], val[chosen][metric]):
            chosen = rule
    out = {rule: dict(values) for rule, values in test.items()}
    if chosen is not None:
        out[VALIDATED_RULE] = dict(test[chosen])
    return out


def _prior(dataset: Any, metric: str) -> dict[str, dict[str, float]]:
    import numpy as np

    from emdloss.metrics import class_prior

    # The trivial predictors of emdloss.metrics.trivial_baselines, under every rule.
    k = dataset.num_classes
    prior = class_prior(dataset.train.targets, k).numpy()
    scores = {
        part: _score(
            np.tile(prior, (len(getattr(dataset, part)), 1)),
            getattr(dataset, part).targets,
            k,
            dataset.positions,
        )
        for part in ("val", "test")
    }
    return _with_validated(scores["val"], scores["test"], metric)


def _logreg(dataset: Any, metric: str) -> dict[str, dict[str, float]]:
    from sklearn.linear_model import LogisticRegression

    k = dataset.num_classes
    x_train, x_val, x_test = (_inputs(getattr(dataset, p)) for p in ("train", "val", "test"))
    y_train = dataset.train.targets
    best: tuple[Any, dict[str, dict[str, float]]] | None = None
    for c in LOGREG_C:
        model = LogisticRegression(C=c, max_iter=5000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_train, y_train)
        val = _score(
            _full_probs(model.predict_proba(x_val), model.classes_, k),
            dataset.val.targets,
            k,
            dataset.positions,
        )
        # The C whose argmax predictions are best on validation for the select metric.
        if best is None or _better(metric, val["argmax"][metric], best[1]["argmax"][metric]):
            best = (model, val)
    assert best is not None
    model, val = best
    test = _score(
        _full_probs(model.predict_proba(x_test), model.classes_, k),
        dataset.test.targets,
        k,
        dataset.positions,
    )
    return _with_validated(val, test, metric)


def _logit_model() -> Any:
    """statsmodels' ``OrderedModel`` with the logistic CDF :func:`scipy.special.expit` itself
    and the log-likelihood's analytic gradient.

    ``OrderedModel(distr="logit")`` calls ``scipy.stats.logistic.cdf``, whose argument checks
    and support masks cost about four fifths of the fit (issue 20: 3.3 of 4.2 s for the
    default suite's 12 fits). For ``loc=0, scale=1`` that generic ``cdf`` returns
    ``expit(x)`` for every finite ``x``, 0 at ``-inf``, 1 at ``+inf`` and NaN at NaN, which is
    what ``expit`` returns. Its ``score`` is a finite-difference gradient, one log-likelihood
    per parameter: MEBeauty's 512 FaceNet features took 224 s a fit (125 s of them for 829
    gradients, the rest for a Hessian the predictions do not use). The analytic ``score``
    below is the same derivative (``tests/compare/test_select.py`` checks it against
    statsmodels' finite differences) at the cost of one log-likelihood.
    """
    import numpy as np
    from scipy.special import expit
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    class _LogitOrderedModel(OrderedModel):
        def cdf(self, x: Any) -> Any:
            x = np.asarray(x)
            return expit(np.asarray(x, dtype=np.promote_types(x.dtype, np.float64)))

        def score(self, params: Any) -> Any:
            # loglikeobs = log(F(upp) - F(low) + 1e-20), upp = th[y + 1] - xb, low = th[y] - xb,
            # th = (-inf, a_1, a_1 + exp(a_2), ..., +inf): the chain rule through each.
            params = np.asarray(params, dtype=np.float64)
            low, upp = self._bounds(params)
            f_low, f_upp = expit(low), expit(upp)
            prob = np.maximum(f_upp - f_low, 0) + 1e-20
            d_upp = f_upp * (1 - f_upp) / prob  # the logistic density over the probability
            d_low = -f_low * (1 - f_low) / prob
            levels = self.k_levels
            grad_beta = -(d_upp + d_low) @ np.asarray(self.exog, dtype=np.float64)
            thresholds = np.zeros(levels + 1)
            np.add.at(thresholds, self.endog + 1, d_upp)
            np.add.at(thresholds, self.endog, d_low)
            above = np.cumsum(thresholds[1:levels][::-1])[::-1]  # sum over th_j, j >= m
            increments = params[-(levels - 1) :]
            grad_a = above * np.concatenate(([1.0], np.exp(increments[1:])))
            return np.concatenate((grad_beta, grad_a))

    return _LogitOrderedModel


def _ordinal_logit(dataset: Any, metric: str) -> dict[str, dict[str, float]]:
    import numpy as np

    k = dataset.num_classes
    x_train, x_val, x_test = (_inputs(getattr(dataset, p)) for p in ("train", "val", "test"))
    # OrderedModel has its own thresholds: a constant column (a one-hot level absent from the
    # training split) would make the model unidentifiable.
    keep = x_train.std(axis=0) > 1e-12
    y_train = dataset.train.targets
    classes = np.unique(y_train)
    codes = np.searchsorted(classes, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _logit_model()(codes, x_train[:, keep], distr="logit").fit(
            method="bfgs", maxiter=2000, disp=False, skip_hessian=True
        )

    def probs(x: Any) -> Any:
        return _full_probs(
            np.asarray(result.model.predict(result.params, exog=x[:, keep])), classes, k
        )

    val = _score(probs(x_val), dataset.val.targets, k, dataset.positions)
    test = _score(probs(x_test), dataset.test.targets, k, dataset.positions)
    return _with_validated(val, test, metric)


_MODELS = {"prior": _prior, "logreg": _logreg, "ordinal_logit": _ordinal_logit}


def baseline_metrics(
    dataset: Any, metric: str = "mae"
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, str]]:
    """Test metrics per prediction rule of every baseline on a loaded data set.

    Parameters
    ----------
    dataset : emdloss.data.OrdinalDataset
        The data set as one run of the comparison loaded it (same seed, split and limits).
    metric : str
        Validation metric that chooses the logistic regression's ``C`` and the validated rule.

    Returns
    -------
    metrics : dict
        ``{"baseline:<name>": {rule: {metric: value}}}``, rules as for a run plus ``validated``.
    errors : dict
        ``{"baseline:<name>": message}`` for a model that could not be fitted.
    """
    names = ["prior"] + (["logreg", "ordinal_logit"] if dataset.kind == "tabular" else [])
    out: dict[str, dict[str, dict[str, float]]] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            with _one_blas_thread():
                scores = _MODELS[name](dataset, metric)
        except ImportError as error:
            errors[BASELINE_PREFIX + name] = f"not installed ({error})"
            continue
        except (ValueError, np_linalg_error(), ArithmeticError) as error:
            errors[BASELINE_PREFIX + name] = f"{type(error).__name__}: {error}"
            continue
        if any(math.isnan(v) for rule in scores.values() for v in rule.values()):
            errors[BASELINE_PREFIX + name] = "gave NaN metrics"
            continue
        out[BASELINE_PREFIX + name] = scores
    return out, errors


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread inside the block (threadpoolctl, which scikit-learn brings).

    The baselines' fits are small: on 2 cores they ran 4x faster on one thread (issue 20),
    threads waiting for each other at the end of every small matrix product.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn requires it
        yield
        return
    with threadpool_limits(limits=1):
        yield


def np_linalg_error() -> type[Exception]:
    """``numpy.linalg.LinAlgError`` (a singular fit), imported lazily."""
    import numpy as np

    return np.linalg.LinAlgError
