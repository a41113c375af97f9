r"""The paper's training recipe as one loss: cross-entropy plus an EMD term, with a warm-up.

Kept in one module: it is one class, :class:`EMDRecipeLoss` (about 440 of the 540 lines), and
about 40% of the length is its numpydoc docstrings with the maths of the recipe.

Hou, Yu & Samaras (arXiv 1611.05916) trained with

.. math::

    \mathcal L = \begin{cases}
        \mathrm{CE}(z, y) & \text{epoch} < K \text{ (warm-up)} \\
        w_{ce}\,\mathrm{CE}(z, y) + w_{emd}\,E(z, y) & \text{otherwise}
    \end{cases}

with :math:`E` one of

* ``"squared"``: :func:`emdloss.functional.squared_emd`, the exact squared EMD of ordered
  classes (the authors' ``emd_l2``);
* ``"fixed"``: :func:`emdloss.functional.cost_matrix_emd` with a cost matrix you give;
* ``"learned"``: :func:`emdloss.functional.cost_matrix_emd` with the matrix of a
  :class:`emdloss.ground.LearnedGroundDistance`, rebuilt after every epoch from the class
  centroids of the network's penultimate features (the authors' ``cost_matrix_loss`` with
  ``update_cost_matrix``).

:class:`EMDRecipeLoss` (alias :data:`CombinedLoss`) packages it; :meth:`EMDRecipeLoss.from_preset`
gives the paper's variants (:data:`PRESETS`).

Three lines in a plain PyTorch loop
-----------------------------------
The model must expose its penultimate features (``OrdinalModel.features`` in
:mod:`emdloss.models`, or split your ``forward``)::

    criterion = EMDRecipeLoss.from_preset("xemd1", num_classes)        # 1. build
    for epoch in range(epochs):
        for x, y in train_loader:
            feats = model.features(x)
            logits = model.head(feats)
            loss = criterion(logits, y, features=feats)                # 2. pass the features
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        criterion.step_epoch()                                          # 3. end of epoch

Line 2 accumulates the (detached) features of the training forward pass into the class
centroids, so no second pass over the data is needed; line 3 rebuilds the matrix once the
warm-up ends and advances the epoch counter (the counter and the matrix are buffers: save
``criterion.state_dict()`` with your checkpoint). Features are accumulated only while the
criterion is in training mode and autograd is on, so a validation loop under
``torch.no_grad()`` does not pollute the centroids.

The authors instead ran an extra deterministic pass after each epoch (dropout off, each image
averaged with its mirror). That is :meth:`EMDRecipeLoss.refresh_from`, called just before
:meth:`~EMDRecipeLoss.step_epoch` (build the criterion with ``collect_features=False``).

Cost (measured on CPU, see ``docs/ground.md``): accumulating the training-pass features
added 0.7% to a training epoch; the authors' mirrored extra pass costs two more forward passes
over the training set, 62% of a training epoch on the small CNN measured (31% without the
mirror). The two also differ in what they measure: training-pass features come from a model
that changes during the epoch and are taken with dropout and augmentation on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emdloss import _validation as V
from emdloss.functional import cost_matrix_emd, squared_emd
from emdloss.ground import LearnedGroundDistance

__all__ = ["PRESETS", "CombinedLoss", "EMDRecipeLoss"]

EMDTerm = Literal["squared", "fixed", "learned"]
_EMD_TERMS = ("squared", "fixed", "learned")

PRESETS: dict[str, dict[str, Any]] = {
    # Cross-entropy alone (the paper's baseline).
    "xe": {"emd_term": "squared", "ce_weight": 1.0, "emd_weight": 0.0, "warmup_epochs": 0},
    # Squared EMD alone on ordered classes, from epoch 0.
    "emd2": {"emd_term": "squared", "ce_weight": 0.0, "emd_weight": 1.0, "warmup_epochs": 0},
    # CE + cost-matrix EMD^2 with the learned matrix, after 4 epochs of CE.
    "xemd1": {"emd_term": "learned", "mu": 0.5, "omega": 1.0, "warmup_epochs": 4},
    "xemd2": {"emd_term": "learned", "mu": 0.25, "omega": 2.0, "warmup_epochs": 4},
}
"""The paper's variants for :meth:`EMDRecipeLoss.from_preset`. The weights of CE and EMD in
"xemd1"/"xemd2" were not published; both default to 1."""


def _check_weight_value(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class EMDRecipeLoss(nn.Module):
    r"""Cross-entropy plus an EMD term with a cross-entropy warm-up (the paper's recipe).

    .. math::

        \mathcal L_t = \begin{cases}
            \mathrm{CE} & t < K \\
            w_{ce}\,\mathrm{CE} + w_{emd}\,E & t \ge K
        \end{cases}

    where :math:`t` is the epoch counter (advanced by :meth:`step_epoch`), :math:`K` the
    warm-up length and :math:`E` the EMD term (see the module docstring). Terms with weight 0
    are not computed.

    Parameters
    ----------
    num_classes : int
        Number of classes :math:`C \ge 2`.
    emd_term : {"squared", "fixed", "learned"}
        ``"squared"``: :func:`~emdloss.functional.squared_emd`; ``"fixed"``:
        :func:`~emdloss.functional.cost_matrix_emd` with ``cost_matrix``; ``"learned"``:
        :func:`~emdloss.functional.cost_matrix_emd` with the learned matrix.
    ce_weight, emd_weight : float
        :math:`w_{ce}, w_{emd} \ge 0`, not both 0 (the paper's values are unknown; default 1).
    warmup_epochs : int
        :math:`K`: epochs of pure cross-entropy first (paper: 4 for the learned matrix).
    cost_matrix : Tensor, optional
        ``(C, C)`` cost matrix for ``emd_term="fixed"`` (rows: true class; finite, negative
        entries allowed, as in :func:`~emdloss.functional.cost_matrix_emd`). The authors' loss
        is meant for a matrix with 1 on the diagonal, like the learned one. (Stored in the
        ``ground_distance`` buffer, the name checkpoints already use.)
    ground_distance : Tensor, optional
        Deprecated alias of ``cost_matrix``: a ground distance (as in
        :func:`~emdloss.functional.ground_emd`) must be non-negative, this matrix need not be.
    mu, omega : float
        Settings of the learned matrix (see :class:`~emdloss.ground.LearnedGroundDistance`).
    ground : LearnedGroundDistance, optional
        A fully configured learned matrix (mode, momentum, prior, ...); overrides ``mu`` and
        ``omega``.
    positions : sequence of float or Tensor, optional
        Class positions for ``"squared"``.
    normalization : str
        ``normalization`` of ``"squared"`` (``"class_mean"``: the authors' :math:`1/C`).
    input_type : {"logits", "probs", "log_probs"}
        What ``input`` holds. Cross-entropy is computed from its log-probabilities.
    weight : Tensor, optional
        ``(C,)`` class weights, used by both terms.
    reduction : {"mean", "sum", "none"}
        As in PyTorch; with ``"none"`` both terms are per element.
    ignore_index : int
        Class index to ignore (index targets).
    collect_features : bool
        Accumulate the ``features`` given to :meth:`forward` into the learned matrix (default).
        Set ``False`` when you use :meth:`refresh_from` instead.

    Examples
    --------
    >>> criterion = EMDRecipeLoss.from_preset("xemd1", 3, warmup_epochs=1)
    >>> logits, y = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), torch.tensor([0, 2])
    >>> feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> float(criterion(logits, y, features=feats))  # epoch 0: cross-entropy only
    0.6...
    >>> criterion.step_epoch()  # end of the warm-up: the matrix is built from those features
    >>> criterion.current_epoch, criterion.in_warmup
    (1, False)
    """

    epoch: Tensor
    weight: Tensor | None
    positions: Tensor | None
    ground_distance: Tensor | None

    def __init__(
        self,
        num_classes: int,
        *,
        emd_term: EMDTerm = "learned",
        ce_weight: float = 1.0,
        emd_weight: float = 1.0,
        warmup_epochs: int = 4,
        cost_matrix: Tensor | None = None,
        ground_distance: Tensor | None = None,
        mu: float = 0.5,
        omega: float = 1.0,
        ground: LearnedGroundDistance | None = None,
        positions: Sequence[float] | Tensor | None = None,
        normalization: str = "class_mean",
        input_type: str = "logits",
        weight: Tensor | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        collect_features: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if emd_term not in _EMD_TERMS:
            raise ValueError(f"emd_term must be one of {_EMD_TERMS}, got {emd_term!r}")
        V.check_choice("input_type", input_type, V.INPUT_TYPES)
        V.check_choice("reduction", reduction, V.REDUCTIONS)
        if ground_distance is not None:
            warnings.warn(
                "EMDRecipeLoss(ground_distance=...) is deprecated: the matrix is a cost matrix "
                "that may be negative, not a ground distance; pass cost_matrix=...",
                DeprecationWarning,
                stacklevel=2,
            )
            if cost_matrix is not None:
                raise ValueError(
                    "pass cost_matrix or its deprecated alias ground_distance, not both"
                )
            cost_matrix = ground_distance
        self.num_classes = num_classes
        self.emd_term: EMDTerm = emd_term
        self.ce_weight = _check_weight_value("ce_weight", ce_weight)
        self.emd_weight = _check_weight_value("emd_weight", emd_weight)
        if self.ce_weight == 0.0 and self.emd_weight == 0.0:
            raise ValueError("ce_weight and emd_weight are both 0: the loss would be constant")
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, int)
            or warmup_epochs < 0
        ):
            raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs
        self.normalization = V.check_normalization(normalization)
        self.ignore_index = V.check_ignore_index(ignore_index)
        self.input_type = input_type
        self.reduction = reduction
        self.collect_features = bool(collect_features)
        self._warned_no_features = False
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("weight", None if weight is None else self._class_vector(weight))
        self.register_buffer(
            "positions", None if positions is None else self._class_vector(positions, "positions")
        )

        c = num_classes
        if emd_term == "fixed":
            if cost_matrix is None:
                raise ValueError("emd_term='fixed' needs cost_matrix, a (C, C) matrix")
            gd = torch.as_tensor(cost_matrix).detach()
            V.check_square_matrix(gd, "cost_matrix", c)
            with V.validation(True):  # once, at construction: always worth the one sync
                V.check_matrix_values(gd, "cost_matrix", allow_negative=True)
            self.register_buffer("ground_distance", gd.to(torch.get_default_dtype()).clone())
        else:
            if cost_matrix is not None:
                raise ValueError(
                    f"cost_matrix is only used with emd_term='fixed', got {emd_term!r}"
                )
            self.register_buffer("ground_distance", None)

        self.ground: LearnedGroundDistance | None
        if emd_term == "learned":
            if ground is None:
                ground = LearnedGroundDistance(c, mu=mu, omega=omega)
            elif not isinstance(ground, LearnedGroundDistance):
                raise TypeError(
                    f"ground must be a LearnedGroundDistance, got {type(ground).__name__}"
                )
            if ground.num_classes != c:
                raise ValueError(f"ground has num_classes={ground.num_classes}, expected {c}")
            self.ground = ground
        else:
            if ground is not None:
                raise ValueError(f"ground is only used with emd_term='learned', got {emd_term!r}")
            self.ground = None

    def _class_vector(self, values: Sequence[float] | Tensor, name: str = "weight") -> Tensor:
        vec = torch.as_tensor(values).detach()
        if not vec.is_floating_point():
            vec = vec.to(torch.get_default_dtype())
        if vec.shape != (self.num_classes,):
            raise ValueError(
                f"{name} must have shape ({self.num_classes},), got {tuple(vec.shape)}"
            )
        return vec.clone()

    # -- presets and schedule ---------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, num_classes: int, **overrides: Any) -> EMDRecipeLoss:
        """Build one of the paper's variants (see :data:`PRESETS`), with optional overrides.

        Parameters
        ----------
        name : {"xe", "emd2", "xemd1", "xemd2"}
            ``"xe"``: cross-entropy; ``"emd2"``: squared EMD alone from epoch 0; ``"xemd1"``:
            CE + learned cost-matrix EMD^2 with ``mu=0.5, omega=1`` after 4 CE epochs;
            ``"xemd2"``: the same with ``mu=0.25, omega=2``.
        num_classes : int
            Number of classes.
        **overrides
            Any constructor argument (e.g. ``ce_weight``, ``warmup_epochs``, ``positions``).

        Returns
        -------
        EMDRecipeLoss

        Examples
        --------
        >>> c = EMDRecipeLoss.from_preset("xemd2", 8)
        >>> c.ground.mu, c.ground.omega, c.warmup_epochs
        (0.25, 2.0, 4)
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {tuple(PRESETS)}")
        return cls(num_classes, **{**PRESETS[name], **overrides})

    @property
    def current_epoch(self) -> int:
        """The epoch counter (0-based), advanced by :meth:`step_epoch`."""
        return int(self.epoch)

    @property
    def in_warmup(self) -> bool:
        """Whether the loss is still pure cross-entropy."""
        return self.current_epoch < self.warmup_epochs

    @property
    def collecting(self) -> bool:
        """Whether features given now would be accumulated (epoch ``>= K - 1``, as the authors,
        who first rebuilt the matrix at the end of the last warm-up epoch)."""
        return self.ground is not None and self.current_epoch >= self.warmup_epochs - 1

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch counter (e.g. from a trainer's ``current_epoch`` when resuming).

        Examples
        --------
        >>> c = EMDRecipeLoss.from_preset("xemd1", 3)
        >>> c.set_epoch(4); c.in_warmup
        False
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch.fill_(epoch)

    @torch.no_grad()
    def step_epoch(self) -> None:
        """End of an epoch: rebuild the learned matrix if due, then advance the counter.

        The matrix is rebuilt from the features accumulated since the last rebuild, and those
        are then cleared, at the end of every epoch from the last warm-up epoch on. Under
        ``torch.distributed`` every rank must call it (the statistics are all-reduced).

        Examples
        --------
        >>> c = EMDRecipeLoss.from_preset("emd2", 5)
        >>> c.step_epoch(); c.current_epoch
        1
        """
        if self.ground is not None and self.collecting:
            if self.collect_features and not self._warned_no_features:
                if not bool(self.ground.class_counts.any()):
                    # Called without features= all epoch: the matrix would silently stay at its
                    # prior. A warning (not an error): under DDP one rank must not stop alone.
                    self._warned_no_features = True
                    warnings.warn(
                        f"EMDRecipeLoss: no features were given during epoch "
                        f"{self.current_epoch + 1}, so the learned ground matrix stays at its "
                        "prior; "
                        "call criterion(logits, target, features=model.features(x)) in training, "
                        "or build it with collect_features=False and call refresh_from() at the "
                        "end of each epoch",
                        RuntimeWarning,
                        stacklevel=3,  # the caller, past torch.no_grad's wrapper
                    )
            self.ground.compute()
            self.ground.reset()
        self.epoch += 1

    @torch.no_grad()
    def refresh_from(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        loader: Iterable[Any],
        *,
        mirror: bool = True,
        device: torch.device | str | None = None,
    ) -> bool:
        """The authors' extra pass: rebuild the learned matrix from a deterministic feature pass.

        Call it at the end of an epoch, before :meth:`step_epoch`. Features are taken with the
        model in eval mode (dropout off; its mode is restored afterwards), from
        ``model.features(x)`` if the model has such a method, else ``model(x)``; with
        ``mirror`` each image's features are averaged with those of its horizontal mirror.
        Features accumulated during the epoch are discarded.

        Parameters
        ----------
        model : nn.Module or callable
            The network (or any ``x -> (N, F)`` feature function).
        loader : iterable
            Batches ``(x, y, ...)`` of the training set (shuffling does not matter).
        mirror : bool
            Average with the horizontally flipped input (needs ``(N, C, H, W)`` images).
        device : optional
            Where to move ``x`` (default: left where it is).

        Returns
        -------
        bool
            ``False`` (and nothing done) before the last warm-up epoch, else ``True``.

        Examples
        --------
        >>> c = EMDRecipeLoss.from_preset("xemd1", 2, warmup_epochs=0, collect_features=False)
        >>> data = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))]
        >>> c.refresh_from(nn.Identity(), data, mirror=False)
        True
        """
        if self.ground is None:
            raise ValueError(f"refresh_from needs emd_term='learned', got {self.emd_term!r}")
        if not self.collecting:
            return False
        features_fn: Callable[[Tensor], Tensor]
        module = model if isinstance(model, nn.Module) else None
        feats_attr = getattr(model, "features", None)
        features_fn = feats_attr if callable(feats_attr) else model
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        try:
            self.ground.reset()
            for batch in loader:
                x, y = batch[0], batch[1]
                if device is not None:
                    x = x.to(device)
                if mirror and x.ndim != 4:
                    raise ValueError(
                        f"mirror=True needs image batches (N, C, H, W), got shape "
                        f"{tuple(x.shape)}; pass mirror=False"
                    )
                f = features_fn(x)
                if mirror:  # the authors averaged each image with its horizontal mirror
                    f = (f + features_fn(x.flip(-1))) / 2.0
                self.ground.update(f, y.to(f.device) if isinstance(y, Tensor) else y)
            self.ground.compute()
            self.ground.reset()
        finally:
            if module is not None:
                module.train(was_training)
        return True

    # -- the loss ----------------------------------------------------------------------------

    def _cross_entropy(self, input: Tensor, target: Tensor) -> Tensor:
        if self.input_type == "probs":
            scores = input.clamp_min(torch.finfo(input.dtype).tiny).log()
        else:  # logits, or log-probabilities (log_softmax leaves those unchanged)
            scores = input
        weight = None if self.weight is None else self.weight.to(input)
        if target.is_floating_point():
            return F.cross_entropy(scores, target, weight=weight, reduction=self.reduction)
        return F.cross_entropy(
            scores, target, weight=weight, ignore_index=self.ignore_index, reduction=self.reduction
        )

    def _emd(self, input: Tensor, target: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.to(input)
        if self.emd_term == "squared":
            return squared_emd(
                input,
                target,
                positions=None if self.positions is None else self.positions.to(input),
                normalization=self.normalization,
                input_type=self.input_type,
                weight=weight,
                reduction=self.reduction,
                ignore_index=self.ignore_index,
            )
        if self.emd_term == "fixed":
            assert self.ground_distance is not None
            matrix = self.ground_distance
        else:
            assert self.ground is not None
            matrix = self.ground.matrix
        return cost_matrix_emd(
            input,
            target,
            matrix.to(input),
            input_type=self.input_type,
            weight=weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )

    def forward(
        self,
        input: Tensor,
        target: Tensor,
        *,
        features: Tensor | None = None,
        accumulate: bool | None = None,
    ) -> Tensor:
        """The loss for this batch; optionally accumulate ``features`` for the learned matrix.

        Parameters
        ----------
        input : Tensor
            ``(N, C)`` (or ``(N, C, d1, ...)``) logits / probabilities / log-probabilities.
        target : Tensor
            Class indices ``(N,)`` or class distributions of the input's shape.
        features : Tensor, optional
            ``(N, F)`` penultimate features of the same forward pass (detached here).
        accumulate : bool, optional
            Whether to accumulate ``features`` (always only while the schedule is collecting,
            see :attr:`collecting`). Default: when ``collect_features`` is set, the criterion
            is in training mode and autograd is on (so validation under ``torch.no_grad()``
            is left out); ``True``/``False`` override that.

        Returns
        -------
        Tensor
            The loss (shape per ``reduction``).
        """
        if torch.is_autocast_enabled(input.device.type) and input.dtype in (
            torch.float16,
            torch.bfloat16,
        ):  # as F.cross_entropy under autocast: both terms in float32, the class vectors too
            input = input.float()
        if features is not None and self.ground is not None:
            if accumulate is None:
                accumulate = self.collect_features and self.training and torch.is_grad_enabled()
            if accumulate and self.collecting:
                self.ground.update(
                    features.detach(), target.detach(), ignore_index=self.ignore_index
                )
        if self.in_warmup:
            return self._cross_entropy(input, target)
        loss: Tensor | None = None
        if self.ce_weight > 0.0:
            loss = self.ce_weight * self._cross_entropy(input, target)
        if self.emd_weight > 0.0:
            emd = self.emd_weight * self._emd(input, target)
            loss = emd if loss is None else loss + emd
        assert loss is not None
        return loss

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, emd_term={self.emd_term!r}, "
            f"ce_weight={self.ce_weight}, emd_weight={self.emd_weight}, "
            f"warmup_epochs={self.warmup_epochs}, epoch={self.current_epoch}"
        )


CombinedLoss = EMDRecipeLoss
"""Alias of :class:`EMDRecipeLoss` (the name used in the project's issue)."""
