r"""A scikit-learn classifier for ordered classes: :class:`EMDClassifier`.

An MLP on tabular features trained with any loss of the training registry
(:data:`emdloss.training.LOSS_NAMES`: the squared EMD ``"emd2"``, the paper's recipe
``"xemd1"``/``"xemd2"``, ``"w1"``, ``"ground"``, cross-entropy, the peers...) by a plain PyTorch
loop (no Lightning), in float64 so that predictions do not depend on how rows are batched.

It follows the scikit-learn developer guide: every parameter is stored unchanged by
``__init__`` and validated in :meth:`EMDClassifier.fit`; fitted attributes end in ``_``; it
passes :func:`sklearn.utils.estimator_checks.check_estimator` and works in ``Pipeline``,
``GridSearchCV``, ``cross_val_score``, ``clone`` and ``pickle``. Needs scikit-learn (the
``sklearn`` extra).

The classes are ordered: by ``classes`` when given (e.g. ``["low", "mid", "high"]``), else by
``numpy.unique`` (sorted). :meth:`EMDClassifier.predict` decodes the class probabilities with a
prediction rule of :func:`emdloss.decode`: the default ``"argmax"`` (the most probable
class, scikit-learn's convention: ``predict`` agrees with ``predict_proba``, as
``check_estimator`` requires) or ``prediction_rule="median"``,
:math:`\hat y = \min\{k : \sum_{i \le k} p_i \ge \tfrac12\}`, which minimises the expected
absolute error, hence MAE. :meth:`EMDClassifier.score` is the negative mean absolute error in class
steps, :math:`-\frac1N \sum_n |\hat y_n - y_n|` (greater is better, as scikit-learn wants), or
accuracy, quadratic weighted kappa or one-off accuracy (``score_metric``).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(120, 3))
>>> y = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.8, 0.0, 0.8])  # 4 ordered classes
>>> clf = EMDClassifier(max_iter=60, random_state=0).fit(X, y)
>>> clf.classes_
array([0, 1, 2, 3])
>>> clf.predict_proba(X[:2]).shape
(2, 4)
>>> bool(clf.score(X, y) > -0.3)  # negative MAE on the training data
True
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from emdloss.decoding import decode
from emdloss.vocabulary import RULES

__all__ = ["SCORE_METRICS", "EMDClassifier", "ordinal_score"]

#: Valid ``score_metric`` values of :class:`EMDClassifier`.
SCORE_METRICS: tuple[str, ...] = ("mae", "accuracy", "qwk", "one_off")


def ordinal_score(y_true: ArrayLike, y_pred: ArrayLike, metric: str = "mae") -> float:
    r"""An ordinal score of class indices, greater is better.

    ``"mae"``: :math:`-\frac1N\sum_n |\hat y_n - y_n|` (negative MAE in class steps);
    ``"accuracy"``: :math:`\frac1N\sum_n [\hat y_n = y_n]`; ``"one_off"``:
    :math:`\frac1N\sum_n [|\hat y_n - y_n| \le 1]`; ``"qwk"``: Cohen's kappa with quadratic
    weights :math:`w_{ij} = (i - j)^2`,
    :math:`\kappa = 1 - \frac{\sum_{ij} w_{ij} O_{ij}}{\sum_{ij} w_{ij} E_{ij}}`
    (scikit-learn's ``cohen_kappa_score``).

    Parameters
    ----------
    y_true, y_pred : array-like of int
        Class indices (positions in the class order), shape ``(N,)``.
    metric : {"mae", "accuracy", "qwk", "one_off"}
        Which score.

    Returns
    -------
    float

    Examples
    --------
    >>> ordinal_score([0, 1, 2, 3], [0, 2, 2, 1])
    -0.75
    >>> ordinal_score([0, 1, 2, 3], [0, 2, 2, 1], "one_off")
    0.75
    """
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-d of the same length, got {true.shape} and {pred.shape}"
        )
    if metric == "mae":
        return -float(np.abs(pred - true).mean())
    if metric == "accuracy":
        return float((pred == true).mean())
    if metric == "one_off":
        return float((np.abs(pred - true) <= 1).mean())
    if metric == "qwk":
        from sklearn.metrics import cohen_kappa_score

        if np.array_equal(true, pred):
            return 1.0  # cohen_kappa_score gives NaN when a single class is all there is
        return float(cohen_kappa_score(true, pred, weights="quadratic"))
    raise ValueError(f"score_metric must be one of {SCORE_METRICS}, got {metric!r}")


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_float(value: Any, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v}")
    return v


class EMDClassifier(ClassifierMixin, BaseEstimator):
    r"""An MLP for ordered classes trained with an EMD (or any registry) loss.

    Parameters
    ----------
    loss : str, default="emd2"
        A name of :data:`emdloss.training.LOSS_NAMES`: ``"emd2"`` (squared EMD of Hou
        et al., :math:`\frac1C\sum_k (P_k - T_k)^2` on the CDFs), ``"xemd1"``/``"xemd2"``
        (their recipe: cross-entropy warm-up, then CE + EMD under a ground distance learned
        from the features), ``"w1"``, ``"ground"``, ``"ce"``, ``"l2"`` or a peer loss.
    hidden_layer_sizes : tuple of int, default=(64,)
        Widths of the hidden ReLU layers.
    learning_rate : float, default=0.01
        Adam's step size.
    max_iter : int, default=100
        Training epochs (passes over the data).
    batch_size : int or "auto", default="auto"
        Rows per step; ``"auto"`` is ``min(200, n_samples)`` (as ``MLPClassifier``).
    weight_decay : float, default=0.0
        Adam's L2 penalty.
    dropout : float, default=0.0
        Dropout after each hidden layer, in ``[0, 1)``.
    loss_options : dict, optional
        Extra keyword arguments of :func:`emdloss.training.losses.build_loss` (e.g.
        ``{"warmup_epochs": 2}`` for the recipe, ``{"positions": [...]}``).
    prediction_rule : {"argmax", "median", "expected", "bayes"}, default="argmax"
        How :meth:`predict` decodes probabilities (:func:`emdloss.decode`); ``"argmax"`` is the
        accuracy-optimal rule and scikit-learn's convention, ``"median"`` the MAE-optimal one
        (pass it when MAE is what counts); ``"bayes"`` uses the loss's
        ground distance (learned or given), else :math:`|i - j|`.
    classes : sequence, optional
        All class labels in their order (e.g. ``["low", "mid", "high"]``); labels of ``y``
        must be among them. Default: the sorted unique labels of ``y``.
    score_metric : {"mae", "accuracy", "qwk", "one_off"}, default="mae"
        What :meth:`score` returns (see :func:`ordinal_score`; ``"mae"`` gives the negative
        MAE, so greater is better).
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the shuffling and dropout: equal seeds give equal models.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, in order.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    model_ : emdloss.models.OrdinalModel
        The trained network (float64).
    criterion_ : emdloss.training.TrainingLoss
        The trained loss (it holds e.g. the learned ground distance).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs run.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> X = [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]]
    >>> y = ["low", "low", "mid", "mid", "high", "high"]
    >>> clf = EMDClassifier(classes=["low", "mid", "high"], max_iter=200, random_state=0)
    >>> pipe = make_pipeline(StandardScaler(), clf).fit(X, y)
    >>> pipe.predict([[0.2], [4.8]]).tolist()
    ['low', 'high']
    """

    def __init__(
        self,
        loss: str = "emd2",
        *,
        hidden_layer_sizes: Sequence[int] = (64,),
        learning_rate: float = 0.01,
        max_iter: int = 100,
        batch_size: int | str = "auto",
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        loss_options: dict[str, Any] | None = None,
        prediction_rule: str = "argmax",
        classes: Sequence[Any] | None = None,
        score_metric: str = "mae",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.loss_options = loss_options
        self.prediction_rule = prediction_rule
        self.classes = classes
        self.score_metric = score_metric
        self.random_state = random_state

    # -- checks ------------------------------------------------------------------------------

    def _check_params(self) -> None:
        from emdloss.training import LOSS_NAMES

        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}, got {self.loss!r}")
        if self.prediction_rule not in RULES:
            raise ValueError(
                f"prediction_rule must be one of {RULES}, got {self.prediction_rule!r}"
            )
        if self.score_metric not in SCORE_METRICS:
            raise ValueError(
                f"score_metric must be one of {SCORE_METRICS}, got {self.score_metric!r}"
            )
        _check_float(self.learning_rate, "learning_rate", positive=True)
        _check_float(self.weight_decay, "weight_decay", positive=False)
        _check_int(self.max_iter, "max_iter", 1)
        if self.batch_size != "auto":
            _check_int(self.batch_size, "batch_size", 1)
        if self.loss_options is not None and not isinstance(self.loss_options, dict):
            raise ValueError(f"loss_options must be a dict or None, got {self.loss_options!r}")

    def _encode_classes(self, y: NDArray[Any]) -> NDArray[np.int64]:
        """Set ``classes_`` and return ``y`` as class indices."""
        if self.classes is None:
            classes, codes = np.unique(y, return_inverse=True)
        else:
            classes = np.asarray(list(self.classes))
            if classes.ndim != 1 or len(classes) == 0:
                raise ValueError(f"classes must be a flat sequence of labels, got {self.classes!r}")
            index = {label: i for i, label in enumerate(classes.tolist())}
            if len(index) != len(classes):
                raise ValueError(f"classes has repeated labels: {self.classes!r}")
            unknown = sorted({str(v) for v in y.tolist() if v not in index})
            if unknown:
                raise ValueError(
                    f"y has labels {unknown[:10]} that are not in classes={list(classes)!r}"
                )
            codes = np.array([index[v] for v in y.tolist()], dtype=np.int64)
        if len(classes) < 2:
            raise ValueError(
                f"EMDClassifier needs at least 2 classes; y has only one class ({classes[0]!r})"
            )
        self.classes_ = classes
        return np.asarray(codes, dtype=np.int64).reshape(-1)

    # -- fit ---------------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike) -> EMDClassifier:
        """Train the network on ``X`` (n_samples, n_features) and labels ``y``.

        Returns
        -------
        EMDClassifier
            ``self``.
        """
        self._check_params()
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y_arr)
        codes = self._encode_classes(y_arr)
        n = X_arr.shape[0]
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        # A private RNG stream: the global torch seed is neither used nor disturbed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._fit(torch.tensor(X_arr), torch.tensor(codes), batch)
        return self

    def _fit(self, x: Tensor, y: Tensor, batch: int) -> None:
        from emdloss.models import build_model
        from emdloss.training.losses import build_loss

        num_classes = len(self.classes_)
        options = dict(self.loss_options or {})
        if self.loss == "sord":
            options.setdefault("train_targets", y)
        criterion = build_loss(self.loss, num_classes, **options)
        model = build_model(
            "mlp",
            num_outputs=criterion.num_outputs,
            input_shape=(x.shape[1],),
            hidden_sizes=tuple(self.hidden_layer_sizes),
            dropout=float(self.dropout),
        )
        head = criterion.make_head(model.feature_dim)
        if head is not None:
            model.head = head  # type: ignore[assignment]  # e.g. a CoralLayer
        model.double()
        criterion.double()
        params = [p for p in (*model.parameters(), *criterion.parameters()) if p.requires_grad]
        optimizer = torch.optim.Adam(
            params, lr=float(self.learning_rate), weight_decay=float(self.weight_decay)
        )
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        extra_pass = bool(getattr(criterion, "extra_pass", False))
        self.loss_curve_: list[float] = []
        n = x.shape[0]
        for _ in range(int(self.max_iter)):
            model.train()
            criterion.train()
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                features = model.features(x[idx])
                loss = criterion(
                    model.head(features),
                    y[idx],
                    features=features if criterion.needs_features else None,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            if not np.isfinite(total):
                raise FloatingPointError(
                    f"the training loss became {total} (learning_rate={self.learning_rate} may "
                    "be too large, or the features need scaling: put a StandardScaler first)"
                )
            if extra_pass:  # the authors' deterministic feature pass for the learned matrix
                criterion.refresh(model, [(x, y)], mirror=False)  # type: ignore[operator]
            criterion.step_epoch()
            self.loss_curve_.append(total / n)
        model.eval()
        criterion.eval()
        self.model_ = model
        self.criterion_ = criterion
        self.n_iter_ = int(self.max_iter)

    # -- predict -----------------------------------------------------------------------------

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        check_is_fitted(self)
        X_arr = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.no_grad():
            outputs = self.model_(torch.tensor(X_arr))
            probs = self.criterion_.probabilities(outputs).numpy().astype(np.float64)
        out: NDArray[np.float64] = probs / probs.sum(axis=1, keepdims=True)
        return out

    def _decode(self, probs: NDArray[np.float64]) -> NDArray[np.int64]:
        rule = self.prediction_rule
        kwargs: dict[str, Any] = {}
        if rule == "bayes":
            matrix = self.criterion_.ground_distance()
            if matrix is None:
                from emdloss.ground import ordinal_ground_distance

                matrix = ordinal_ground_distance(len(self.classes_))
            kwargs["ground_distance"] = matrix.detach().to(torch.float64)
        elif rule == "expected" and (self.loss_options or {}).get("positions") is not None:
            kwargs["positions"] = (self.loss_options or {})["positions"]
        codes: NDArray[np.int64] = decode(torch.from_numpy(probs), rule, **kwargs).numpy()
        return codes

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Predicted labels: ``classes_[rule(predict_proba(X))]`` with ``prediction_rule``."""
        codes = self._decode(self.predict_proba(X))
        return np.asarray(self.classes_[codes])

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """The ``score_metric`` of :meth:`predict` on ``(X, y)``; greater is better.

        Default: negative mean absolute error in class steps (``-MAE``).
        """
        if sample_weight is not None:
            raise ValueError("EMDClassifier.score does not support sample_weight")
        check_is_fitted(self)
        index = {label: i for i, label in enumerate(self.classes_.tolist())}
        labels = np.asarray(y).reshape(-1).tolist()
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise ValueError(f"y has labels {unknown[:10]} that are not in classes_")
        true = np.array([index[v] for v in labels], dtype=np.int64)
        pred = self._decode(self.predict_proba(X))
        return ordinal_score(true, pred, self.score_metric)
