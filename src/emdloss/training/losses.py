r"""The losses the training toolkit can train with, by name.

:func:`build_loss` turns a name into a :class:`~emdloss.training.TrainingLoss`: a module that knows how many
outputs the network must have, computes the loss from those outputs, and maps the outputs to
class probabilities :math:`(N, C)` for metrics and prediction rules.

========================  =========  ===================================================
name                      outputs    loss
========================  =========  ===================================================
``ce``                    C          cross-entropy
``emd2``                  C          squared EMD of the paper, :math:`\frac1C\sum_k (P_k-T_k)^2`
                                     (the recipe's ``emd2`` preset)
``w1``                    C          exact EMD with ground distance :math:`|x_i - x_j|` (W1)
``xemd1``, ``xemd2``      C          the paper's recipe: cross-entropy warm-up, then
                                     cross-entropy + cost-matrix EMD with a ground distance
                                     learned from the features (mu, omega = 0.5, 1 / 0.25, 2)
``ground``                C          exact EMD under a given ground-distance matrix
                                     (default :math:`|x_i - x_j|^p`); Sinkhorn for soft
                                     targets
``l2``                    1          squared error of a regressed class index
``nima``                  C          NIMA's EMD (Talebi & Milanfar 2018, r = 2):
                                     :math:`\sqrt{\frac1C\sum_k (P_k-T_k)^2}` per item, then
                                     the mean over items
``dlordinal_emd``         C          dlordinal ``EMDLoss`` (peer)
``triangular``            C          dlordinal ``TriangularLoss`` with cross-entropy (peer)
``sord``                  C          dlordinal ``SORDLoss`` (peer)
``corn``                  C - 1      dlordinal ``CORNLoss`` (peer)
``coral``                 C - 1      coral-pytorch ``coral_loss`` with a ``CoralLayer`` head
========================  =========  ===================================================

Distribution targets (vote histograms, LDL; ``TrainingLoss.supports_soft_targets``): ``ce``
(soft cross-entropy :math:`-\sum_k t_k \ln p_k`, the KL divergence up to the target's
entropy), ``emd2``, ``w1``, ``nima``, ``xemd1``/``xemd2`` (cross-entropy and the cost-matrix
term with the target-weighted row) and the peer ``dlordinal_emd`` use the whole distribution
exactly; ``ground`` uses it through the entropic (Sinkhorn) EMD, an approximation from above;
``l2`` regresses its mean level. ``triangular``, ``sord``, ``corn`` and ``coral`` build their
own targets from a class index and refuse a distribution target.

Class probabilities of the non-softmax losses:

* ``l2``: the regressed value :math:`v`, clipped to :math:`[0, C-1]`, is split between the two
  nearest classes by linear interpolation, :math:`p_{\lfloor v\rfloor} = 1 - (v - \lfloor
  v\rfloor)` and :math:`p_{\lfloor v\rfloor + 1} = v - \lfloor v\rfloor`, so the expected class
  is exactly :math:`v` and argmax rounds it.
* ``corn`` and ``coral``: the cumulative probabilities :math:`S_k = P(y > k)` (CORN: the product
  of the conditional sigmoids; CORAL: the sigmoids, made non-increasing by a running minimum)
  give :math:`p_k = S_{k-1} - S_k` with :math:`S_{-1} = 1, S_{C-1} = 0`: a proper distribution,
  not the one-hot vector of the predicted rank. Its median is the peers' own prediction
  (the number of :math:`S_k > 0.5`).

Split by job: :class:`~emdloss.training.TrainingLoss` is defined in
:mod:`emdloss.training._loss_base`, the loss names (:data:`emdloss.training.LOSS_NAMES`) in
:mod:`emdloss.vocabulary` and the peer-loss wrappers in
:mod:`emdloss.training._peer_losses`; this module keeps the registry and emdloss's own losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emdloss import _validation as V

# Imported as modules, not names: their public names warn when read from here (see _MOVED).
from emdloss import vocabulary
from emdloss._deprecation import moved_attribute
from emdloss.errors import UserError
from emdloss.training import _loss_base
from emdloss.training._peer_losses import _Coral, _Corn, _peer, _PeerSoftmax

__all__ = ["build_loss", "regression_to_probabilities"]

_RECIPE = ("emd2", "xemd1", "xemd2")


# ---------------------------------------------------------------------------- softmax losses
class _CrossEntropy(_loss_base.TrainingLoss):
    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        return F.cross_entropy(outputs, target if dist is None else dist)


class _Recipe(_loss_base.TrainingLoss):
    """``emd2``, ``xemd1``, ``xemd2``: :class:`emdloss.recipe.EMDRecipeLoss` presets.

    With a learned ground distance the features of the training forward pass are accumulated
    (default), or, with ``feature_pass="extra"``, the authors' deterministic extra pass (dropout
    off, images averaged with their mirror) is run at the end of every epoch.
    """

    def __init__(self, name: str, num_classes: int, recipe: nn.Module, extra_pass: bool) -> None:
        super().__init__(name, num_classes, num_classes)
        self.recipe = recipe
        self.extra_pass = extra_pass
        self.needs_features = getattr(recipe, "ground", None) is not None and not extra_pass

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        recipe: Any = self.recipe
        if features is not None and recipe.ground is not None and recipe.collecting:
            # Centroids are per true class, also when the loss sees a soft target.
            recipe.ground.update(features.detach(), target.detach())
        loss: Tensor = recipe(outputs, target if dist is None else dist, features=None)
        return loss

    def step_epoch(self) -> None:
        self.recipe.step_epoch()  # type: ignore[operator]

    def selectable(self, total_epochs: int) -> bool:
        # A checkpoint from the cross-entropy warm-up is a cross-entropy model: selecting it
        # would report plain CE under the recipe's name. Only when the whole budget is warm-up
        # (a misconfiguration the user asked for) are warm-up epochs eligible.
        recipe: Any = self.recipe
        return not recipe.in_warmup or recipe.warmup_epochs >= total_epochs

    def ground_distance(self) -> Tensor | None:
        ground = getattr(self.recipe, "ground", None)
        return None if ground is None else ground.matrix

    def refresh(self, model: nn.Module, loader: Any, *, mirror: bool) -> None:
        """The authors' extra feature pass (only with ``feature_pass="extra"``)."""
        if self.extra_pass:
            self.recipe.refresh_from(model, loader, mirror=mirror)  # type: ignore[operator]


_GROUND_OPTIONS = ("mode", "momentum", "prior", "require_nonnegative", "normalize")

# The type every loss option must have; a value of another type is refused by name (a string
# such as mu=banana used to be accepted, and failed later or was ignored). Numbers may come as
# numeric strings (from --set or an environment); the rest of the checks are the losses' own.
_NUMBER_OPTIONS = frozenset({"mu", "omega", "momentum", "alpha", "alpha2", "eta"})
_BOOL_OPTIONS = frozenset({"require_nonnegative", "normalize"})
_STR_OPTIONS = frozenset({"mode", "feature_pass", "emd_term", "normalization", "input_type"})
_STR_OPTIONS |= {"reduction"}
_INT_OPTIONS = frozenset({"ignore_index"})
_NONE_ALLOWED = frozenset({"momentum"})


def _typed_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with numbers as floats; UserError naming option, value and expected type."""
    typed = dict(options)
    for key, value in options.items():
        if value is None and key in _NONE_ALLOWED:
            continue
        expected = None
        if key in _NUMBER_OPTIONS:
            number = None
            if not isinstance(value, bool):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = None
            if number is None or not math.isfinite(number) or isinstance(value, bytes):
                expected = "a finite number (float)"
            else:
                typed[key] = number
        elif key in _BOOL_OPTIONS and not isinstance(value, bool):
            expected = "true or false (bool)"
        elif key in _STR_OPTIONS and not isinstance(value, str):
            expected = "a name (str)"
        elif key in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int)):
            expected = "an integer (int)"
        if expected is not None:
            # Not "option KEY=": the CLI would spell that as a --KEY flag, which this is not.
            raise UserError(
                f"loss {name!r}: loss option {key} is {value!r} ({type(value).__name__}); "
                f"expected {expected}"
            )
    return typed


def _recipe_loss(
    name: str,
    num_classes: int,
    positions: Tensor | None,
    overrides: dict[str, Any],
    options: dict[str, Any],
) -> _Recipe:
    from emdloss.ground import LearnedGroundDistance
    from emdloss.recipe import PRESETS, EMDRecipeLoss

    kwargs = {key: value for key, value in overrides.items() if value is not None}
    opts = dict(options)
    feature_pass = opts.pop("feature_pass", "training")
    if feature_pass not in ("training", "extra"):
        raise ValueError(f"feature_pass must be 'training' or 'extra', got {feature_pass!r}")
    learned = name in ("xemd1", "xemd2")
    if not learned and (feature_pass != "training" or set(opts) & set(_GROUND_OPTIONS)):
        raise ValueError(f"loss {name!r} has no learned ground distance to configure")
    if opts.get("emd_term", PRESETS[name]["emd_term"]) != "learned" and {"mu", "omega"} & set(opts):
        given = ", ".join(sorted({"mu", "omega"} & set(opts)))
        raise UserError(
            f"loss {name!r} has no learned ground matrix, so {given} would be ignored; "
            "they apply to xemd1 and xemd2"
        )
    if learned:
        ground_kwargs = {key: opts.pop(key) for key in _GROUND_OPTIONS if key in opts}
        if ground_kwargs:
            mu = float(opts.pop("mu", PRESETS[name]["mu"]))
            omega = float(opts.pop("omega", PRESETS[name]["omega"]))
            kwargs["ground"] = LearnedGroundDistance(
                num_classes, mu=mu, omega=omega, **ground_kwargs
            )
        kwargs["collect_features"] = feature_pass == "training"
    elif positions is not None:
        kwargs["positions"] = positions
    try:
        recipe = EMDRecipeLoss.from_preset(name, num_classes, **kwargs, **opts)
    except TypeError as error:
        raise ValueError(f"bad option for loss {name!r}: {error}") from None
    return _Recipe(name, num_classes, recipe, extra_pass=feature_pass == "extra")


class _W1(_loss_base.TrainingLoss):
    def __init__(self, num_classes: int, positions: Tensor | None) -> None:
        super().__init__("w1", num_classes, num_classes)
        self.positions = positions

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        from emdloss.functional import emd

        return emd(
            outputs, target if dist is None else dist, p=1, positions=_on(self.positions, outputs)
        )


class _GroundEMD(_loss_base.TrainingLoss):
    matrix: Tensor

    def __init__(self, num_classes: int, matrix: Tensor) -> None:
        super().__init__("ground", num_classes, num_classes)
        self.register_buffer("matrix", matrix)

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        from emdloss.functional import ground_emd

        if dist is None:
            return ground_emd(outputs, target, self.matrix.to(outputs))
        # Soft targets have no closed form under a general matrix: entropic (Sinkhorn) EMD,
        # an approximation from above of the exact value.
        return ground_emd(outputs, dist, self.matrix.to(outputs), method="sinkhorn")

    def ground_distance(self) -> Tensor | None:
        return self.matrix


class _NimaEMD(_loss_base.TrainingLoss):
    """NIMA's EMD with r = 2: the root mean squared CDF difference per item, then the mean."""

    def __init__(self, num_classes: int) -> None:
        super().__init__("nima", num_classes, num_classes)

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        from emdloss.functional import squared_emd

        per_item = squared_emd(outputs, target if dist is None else dist, reduction="none")
        # The square root has an infinite slope at 0 (a prediction equal to its target); the
        # floor changes the value only below 1e-12 and keeps the gradient finite.
        return per_item.clamp_min(1e-24).sqrt().mean()


# ---------------------------------------------------------------------------- regression
def regression_to_probabilities(values: Tensor, num_classes: int) -> Tensor:
    r"""Split regressed class indices between the two nearest classes.

    .. math::

        v = \min(\max(\hat y, 0), C - 1), \quad
        p_{\lfloor v \rfloor} = 1 - (v - \lfloor v \rfloor), \quad
        p_{\lfloor v \rfloor + 1} = v - \lfloor v \rfloor

    so that :math:`\sum_k k\, p_k = v`.

    Parameters
    ----------
    values : Tensor
        Regressed indices, shape (N,) or (N, 1).
    num_classes : int
        Number of classes :math:`C`.

    Returns
    -------
    Tensor
        Probabilities (N, C).

    Examples
    --------
    >>> regression_to_probabilities(torch.tensor([1.25, -3.0, 9.0]), 3)
    tensor([[0.0000, 0.7500, 0.2500],
            [1.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 1.0000]])
    """
    v = values.reshape(-1).clamp(0.0, float(num_classes - 1))
    low = v.floor().clamp(max=num_classes - 1).long()
    frac = v - low.to(v.dtype)
    high = (low + 1).clamp(max=num_classes - 1)
    probs = torch.zeros(v.shape[0], num_classes, dtype=v.dtype, device=v.device)
    probs.scatter_add_(1, low[:, None], (1.0 - frac)[:, None])
    probs.scatter_add_(1, high[:, None], frac[:, None])
    return probs


class _L2(_loss_base.TrainingLoss):
    def __init__(self, num_classes: int) -> None:
        super().__init__("l2", num_classes, 1)

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        value = outputs.reshape(-1)
        if dist is None:
            goal = target.to(value.dtype)
        else:
            goal = dist.to(value.dtype) @ torch.arange(
                self.num_classes, dtype=value.dtype, device=value.device
            )
        return F.mse_loss(value, goal)

    def probabilities(self, outputs: Tensor) -> Tensor:
        return regression_to_probabilities(outputs, self.num_classes)


# ---------------------------------------------------------------------------- registry
def _on(tensor: Tensor | None, like: Tensor) -> Tensor | None:
    return None if tensor is None else tensor.to(device=like.device, dtype=like.dtype)


def _check_matrix(matrix: Any, num_classes: int) -> Tensor:
    m = torch.as_tensor(matrix, dtype=torch.float32)
    V.check_square_matrix(m, "ground_distance", num_classes)
    with V.validation(True):  # once, when the loss is built: always worth the one sync
        V.check_matrix_values(m, "ground_distance", allow_negative=False)
    return m


def build_loss(
    name: str,
    num_classes: int,
    *,
    positions: Sequence[float] | Tensor | None = None,
    ground_distance: Tensor | Sequence[Sequence[float]] | None = None,
    ground_power: float = 1.0,
    train_targets: Tensor | Sequence[int] | None = None,
    warmup_epochs: int | None = None,
    ce_weight: float | None = None,
    emd_weight: float | None = None,
    **options: Any,
) -> _loss_base.TrainingLoss:
    """Build a training loss by name.

    Parameters
    ----------
    name : str
        One of :data:`emdloss.training.LOSS_NAMES`.
    num_classes : int
        Number of ordered classes (>= 2).
    positions : sequence of float, optional
        Class positions on the real line (``emd2``, ``w1`` and the default ``ground`` matrix).
    ground_distance : Tensor (C, C), optional
        The matrix of ``ground``; default :math:`|x_i - x_j|^{p}` with ``p = ground_power``.
    ground_power : float, default 1.0
        Power of the default ground distance.
    train_targets : sequence of int, optional
        Training labels (``sord`` needs them).
    warmup_epochs, ce_weight, emd_weight : optional
        Recipe settings for ``emd2``/``xemd1``/``xemd2`` (cross-entropy warm-up epochs and the
        weights of the two terms); ``None`` keeps the preset's values.
    **options
        Loss-specific options: ``alpha2``, ``eta`` (``triangular``); ``alpha`` (``sord``);
        for the recipe losses any :class:`emdloss.recipe.EMDRecipeLoss` argument (``mu``,
        ``omega``, ``normalization``, ...), the learned matrix's ``mode``, ``momentum``,
        ``prior``, and ``feature_pass`` (``"training"``: features of the training forward
        pass, default; ``"extra"``: the authors' extra mirrored pass after every epoch).

    Returns
    -------
    emdloss.training.TrainingLoss

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid names) or bad options.
    ImportError
        For a peer loss whose package is missing (the message names the extra to install).

    Examples
    --------
    >>> loss = build_loss("l2", 5)
    >>> loss.num_outputs
    1
    >>> float(loss(torch.tensor([[1.5]]), torch.tensor([2])))
    0.25
    """
    if name not in vocabulary.LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(vocabulary.LOSS_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    pos = None
    if positions is not None:
        pos = V.as_class_vector(positions, "positions", num_classes, torch.empty(0))
        with V.validation(True):
            V.check_positions_values(pos)
    recipe_options = {"warmup_epochs": warmup_epochs, "ce_weight": ce_weight}
    recipe_options["emd_weight"] = emd_weight
    if name not in _RECIPE and any(v is not None for v in recipe_options.values()):
        given = [k for k, v in recipe_options.items() if v is not None]
        raise ValueError(
            f"{', '.join(given)} only apply to the recipe losses {', '.join(_RECIPE)}, "
            f"not to {name!r}"
        )
    allowed = {"triangular": {"alpha2", "eta"}, "sord": {"alpha"}}.get(name, set())
    if name in _RECIPE:
        allowed = set(options)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"loss {name!r} takes no option(s) {', '.join(unknown)}"
            + (f"; valid: {', '.join(sorted(allowed))}" if allowed else "")
        )
    options = _typed_options(name, options)
    if name == "ce":
        return _CrossEntropy("ce", num_classes, num_classes)
    if name in _RECIPE:
        return _recipe_loss(name, num_classes, pos, recipe_options, options)
    if name == "w1":
        return _W1(num_classes, pos)
    if name == "ground":
        if ground_distance is None:
            from emdloss.ground import ordinal_ground_distance

            matrix = ordinal_ground_distance(num_classes, positions=pos, power=ground_power)
        else:
            matrix = _check_matrix(ground_distance, num_classes)
        return _GroundEMD(num_classes, matrix.to(torch.float32))
    if name == "l2":
        return _L2(num_classes)
    if name == "nima":
        return _NimaEMD(num_classes)
    if name == "coral":
        return _Coral(num_classes)
    if name == "corn":
        return _Corn(num_classes)
    losses = _peer("dlordinal.losses", "dlordinal", name)
    if name == "dlordinal_emd":
        # dlordinal's EMDLoss takes a (N, C) target as it is: it can train on distributions.
        return _PeerSoftmax(name, num_classes, losses.EMDLoss(num_classes), soft=True)
    if name == "triangular":
        base = nn.CrossEntropyLoss()
        return _PeerSoftmax(name, num_classes, losses.TriangularLoss(base, num_classes, **options))
    # sord: dlordinal's default proximity is |i - y|; it keeps the training labels.
    if train_targets is None:
        raise ValueError("loss 'sord' needs train_targets (the training labels)")
    targets = torch.as_tensor(train_targets, dtype=torch.long)
    alpha = float(options.get("alpha", 1.0))
    return _PeerSoftmax(name, num_classes, losses.SORDLoss(alpha, num_classes, targets))


# Public names of this module in emdloss 0.1.0 that now live elsewhere: reading them here warns.
_MOVED = {
    "LOSS_NAMES": "emdloss.training",
    "OUR_LOSS_NAMES": "emdloss.training",
    "PEER_LOSS_NAMES": "emdloss.training",
    "TrainingLoss": "emdloss.training",
    "cumulative_to_probabilities": "emdloss.training._peer_losses",  # internal
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
