"""Ordinal classification metrics: functional (:mod:`emdloss.metrics.functional`) and stateful
torchmetrics classes that synchronise under DDP
(:class:`~emdloss.metrics.stateful.OrdinalMetrics` and single metrics); measures of predicted
against target distributions (vote histograms; :mod:`emdloss.metrics.distribution`: the six LDL
measures, the squared EMD, mean-score errors and correlations, the noise floor of vote counts);
and coverage / size of conformal prediction sets
(:class:`~emdloss.metrics.prediction_sets.ConformalCoverage`, :func:`~emdloss.metrics.prediction_sets.prediction_set_metrics`).

Examples
--------
>>> import torch
>>> from emdloss.metrics import OrdinalMetrics, mean_absolute_error
>>> float(mean_absolute_error(torch.tensor([0, 2]), torch.tensor([1, 2])))
0.5
>>> sorted(OrdinalMetrics(num_classes=3, positions=[0.0, 1.0, 3.0]).metric_names)
['accuracy', 'amae', 'mae', 'mae_pos', 'one_off_accuracy', 'qwk', 'rmse', 'rmse_pos', 'rps', 'spearman']
"""

from emdloss.metrics.baselines import BASELINES, class_prior, trivial_baselines
from emdloss.metrics.confmat import confusion_matrix
from emdloss.metrics.distribution import (
    DISTRIBUTION_METRIC_KEYS,
    DistributionMetrics,
    NoiseFloor,
    canberra,
    chebyshev,
    check_distribution,
    check_distributions,
    clark,
    cosine_similarity,
    distribution_metrics,
    emd2,
    intersection,
    kl_divergence,
    lcc,
    mean_score,
    mean_score_mae,
    mean_score_rmse,
    mode_accuracy,
    nima_emd,
    noise_floor,
    srcc,
)
from emdloss.metrics.functional import (
    accuracy,
    average_mae,
    mean_absolute_error,
    one_off_accuracy,
    per_class_mae,
    quadratic_weighted_kappa,
    ranked_probability_score,
    root_mean_squared_error,
    spearman,
)
from emdloss.metrics.prediction_sets import ConformalCoverage, prediction_set_metrics
from emdloss.metrics.stateful import (
    ORDINAL_METRIC_KEYS,
    AverageMAE,
    OneOffAccuracy,
    OrdinalMetrics,
    QuadraticWeightedKappa,
    RankedProbabilityScore,
)
from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES

__all__ = [
    "BASELINES",
    "DISTRIBUTION_METRIC_KEYS",
    "DISTRIBUTION_METRIC_MODES",
    "ORDINAL_METRIC_KEYS",
    "AverageMAE",
    "ConformalCoverage",
    "DistributionMetrics",
    "NoiseFloor",
    "OneOffAccuracy",
    "OrdinalMetrics",
    "QuadraticWeightedKappa",
    "RankedProbabilityScore",
    "accuracy",
    "average_mae",
    "canberra",
    "chebyshev",
    "check_distribution",
    "check_distributions",
    "clark",
    "class_prior",
    "confusion_matrix",
    "cosine_similarity",
    "distribution_metrics",
    "emd2",
    "intersection",
    "kl_divergence",
    "lcc",
    "mean_absolute_error",
    "mean_score",
    "mean_score_mae",
    "mean_score_rmse",
    "mode_accuracy",
    "nima_emd",
    "noise_floor",
    "one_off_accuracy",
    "per_class_mae",
    "prediction_set_metrics",
    "quadratic_weighted_kappa",
    "ranked_probability_score",
    "root_mean_squared_error",
    "spearman",
    "srcc",
    "trivial_baselines",
]
