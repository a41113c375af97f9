"""The Lightning module: one network, one loss of the registry, every prediction rule scored."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from emdloss.decoding import decode
from emdloss.errors import UserError
from emdloss.metrics import OrdinalMetrics
from emdloss.models import members_of
from emdloss.training._loss_base import TrainingLoss
from emdloss.training._sampling import seed_epoch
from emdloss.training.config import TrainConfig
from emdloss.vocabulary import RULES

__all__ = ["OrdinalTask"]

_HISTORY_KEY = "emdloss_history"
#: The logged value model selection monitors (see ``TrainingLoss.selectable``).
SELECT_KEY = "val_select"

# Training steps between host reads of the "was any loss non-finite" flag on an accelerator
# (a read synchronises with the device; on the CPU it is free and done every step).
FINITE_CHECK_EVERY = 50


def _host_reads_are_free(device: torch.device) -> bool:
    return device.type == "cpu"


def _mean_metric_without_sync() -> MeanMetric:
    """A MeanMetric that does not inspect its input for NaN (that inspection syncs every step).

    The non-finite training loss is caught by OrdinalTask._note_loss instead. Torchmetrics
    releases without ``nan_strategy="disable"`` fall back to dropping NaN with a warning.
    """
    try:
        return MeanMetric(nan_strategy="disable")
    except ValueError:
        return MeanMetric(nan_strategy="warn")


class OrdinalTask(pl.LightningModule):
    r"""Train a network with a loss of :mod:`emdloss.training.losses` and score every rule.

    The learning rate of epoch :math:`e` is set at the start of the epoch from the epoch number
    alone, :math:`\eta_e = \eta\,\gamma^{e}` (``"exponential"``) or
    :math:`\eta_e = \tfrac{\eta}{2}(1 + \cos(\pi e / E))` (``"cosine"``), and the random
    generators are reseeded from ``(seed, e)``: a run resumed from an epoch-end checkpoint
    follows exactly the path of an uninterrupted one.

    Parameters
    ----------
    model : nn.Module
        An :class:`emdloss.models.OrdinalModel` (``features(x)``, ``head``), or an
        :class:`emdloss.models.OrdinalEnsemble` of them: each member is trained by the loss on
        its own outputs, and the probabilities are the mean of the members' probabilities.
    loss : TrainingLoss
        The training loss; if it brings its own head (CORAL), the model's head is replaced.
    num_classes : int
        :math:`C`.
    positions : sequence of float, optional
        Class positions (``expected`` rule, position-unit metrics).
    decision_cost : Tensor (C, C), optional
        Cost matrix of the ``bayes`` rule; default :math:`|x_i - x_j|`.
    config : TrainConfig, optional
        The run's options (default ``TrainConfig()``); the task reads the optimiser (SGD with
        Nesterov momentum, or AdamW), ``lr``, ``momentum``, ``weight_decay``, the schedule
        (``scheduler``, ``lr_decay``, ``epochs``), ``seed`` (per-epoch reseeding),
        ``monitor_rule`` (whose validation metrics are logged under plain names, ``val_mae``
        ...), ``monitor`` (logged as ``val_select``, the worst value in epochs the loss rules
        out, such as the recipe's cross-entropy warm-up) and ``tta``.
    tta : bool, optional
        Average the probabilities of each image and its horizontal mirror at evaluation;
        default ``config.tta`` (:func:`emdloss.training._build.build_task` turns it off for
        tables).
    input_mean, input_std : sequence of float, optional
        Per-channel normalisation of image inputs, applied inside the module so that saved
        checkpoints predict from raw [0, 1] images.
    distribution : bool
        The items carry distribution targets (vote histograms, LDL): the distribution measures
        of :mod:`emdloss.metrics.distribution` are computed on validation and test
        (``distribution_results``), logged as ``val_<measure>`` and available to ``monitor``.

    Examples
    --------
    >>> from emdloss.training.losses import build_loss
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body, self.head = nn.Linear(2, 4), nn.Linear(4, 3)
    ...     def features(self, x):
    ...         return torch.relu(self.body(x))
    ...     def forward(self, x):
    ...         return self.head(self.features(x))
    >>> task = OrdinalTask(Net(), build_loss("ce", 3), num_classes=3)
    >>> task.predict_proba(torch.zeros(2, 2)).shape
    torch.Size([2, 3])
    """

    decision_cost: Tensor
    input_mean: Tensor
    input_std: Tensor

    def __init__(
        self,
        model: nn.Module,
        loss: TrainingLoss,
        *,
        num_classes: int,
        positions: Sequence[float] | None = None,
        decision_cost: Tensor | None = None,
        config: TrainConfig | None = None,
        tta: bool | None = None,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        distribution: bool = False,
    ) -> None:
        super().__init__()
        config = TrainConfig() if config is None else config
        if loss.num_classes != num_classes:
            raise ValueError(f"loss has {loss.num_classes} classes, expected {num_classes}")
        self.model = model
        self.criterion = loss
        #: The networks trained side by side: the model's members, or the model alone.
        self.members: list[nn.Module] = members_of(model)
        if len(self.members) > 1 and (loss.needs_features or getattr(loss, "extra_pass", False)):
            raise UserError(
                f"--ensemble {len(self.members)} with --loss {loss.name}: its ground distance is "
                "learned from one network's features; train it with --ensemble 1"
            )
        for member in self.members:
            head = loss.make_head(_head_in_features(member))
            if head is not None:
                member.head = head
        self.num_classes = num_classes
        self.positions = None if positions is None else [float(p) for p in positions]
        if decision_cost is None:
            from emdloss.ground import ordinal_ground_distance

            decision_cost = ordinal_ground_distance(num_classes, positions=self.positions)
        self.register_buffer("decision_cost", torch.as_tensor(decision_cost, dtype=torch.float32))
        mean = torch.zeros(0) if input_mean is None else torch.tensor(list(input_mean))
        std = torch.ones(0) if input_std is None else torch.tensor(list(input_std))
        self.register_buffer("input_mean", mean.to(torch.float32))
        self.register_buffer("input_std", std.to(torch.float32))
        # The options the task reads (checked by TrainConfig).
        self.optimizer_name = config.optimizer
        self.lr = config.lr
        self.momentum = config.momentum
        self.weight_decay = config.weight_decay
        self.scheduler_name = config.scheduler
        self.lr_decay = config.lr_decay
        self.epochs = config.epochs
        self.seed = config.seed
        self.monitor_rule = config.monitor_rule
        # Distribution targets select on config.distribution_monitor (TrainConfig.selection).
        self.monitor, self.monitor_mode = config.selection(bool(distribution))
        self.tta = config.tta if tta is None else bool(tta)
        self.val_metrics = self._rule_metrics()
        self.test_metrics = self._rule_metrics()
        self.distribution = bool(distribution)
        self.distribution_metrics = nn.ModuleDict()
        if self.distribution:
            from emdloss.metrics.distribution import DistributionMetrics

            for part in ("val", "test"):
                self.distribution_metrics[part] = DistributionMetrics(
                    num_classes, positions=self.positions
                )
        self.distribution_results: dict[str, dict[str, float]] = {}
        #: The target distributions of the test items, in the order of ``test_outputs``.
        self.test_targets: list[Tensor] = []
        self.train_loss_mean = _mean_metric_without_sync()
        # (batch index, value) of the first non-finite loss on the device; index -1: none yet
        self._bad: tuple[Tensor, Tensor] | None = None
        self.val_loss_mean = MeanMetric()
        self.history: list[dict[str, float]] = []
        self._pending: dict[str, float] = {}
        self._epoch_start = time.perf_counter()
        self._log_steps = True
        self.test_outputs: list[tuple[Tensor, Tensor]] = []
        self.results: dict[str, dict[str, dict[str, float]]] = {}

    def _rule_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {rule: OrdinalMetrics(self.num_classes, positions=self.positions) for rule in RULES}
        )

    # ------------------------------------------------------------------ inference
    def _normalise(self, x: Tensor) -> Tensor:
        if self.input_mean.numel() == 0 or x.ndim != 4:
            return x
        shape = (1, -1, 1, 1)
        return (x - self.input_mean.view(shape)) / self.input_std.view(shape)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of the network (what a learned ground distance learns from)."""
        if len(self.members) > 1:
            raise TypeError("an ensemble has one set of features per member, not one")
        out: Tensor = self.model.features(self._normalise(x))  # type: ignore[operator]
        return out

    def head(self, features: Tensor) -> Tensor:
        """The network's output layer applied to ``features``."""
        out: Tensor = self.model.head(features)  # type: ignore[operator]
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Network outputs (logits, regressed index or threshold logits): ``(N, O)``, or
        ``(N, K, O)`` for an ensemble of ``K`` members."""
        out: Tensor = self.model(self._normalise(x))
        return out

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities (N, C), with the mirror average when ``tta`` is on."""
        mirrored = self(torch.flip(x, dims=[-1])) if self.tta and x.ndim == 4 else None
        return self.probabilities(self(x), mirrored)

    def probabilities(self, outputs: Tensor, mirrored: Tensor | None = None) -> Tensor:
        """Class probabilities from the model's ``outputs``, averaged with those of the
        mirrored images' outputs when given (``tta``)."""
        probs = self._member_mean(outputs)
        if mirrored is not None:
            probs = 0.5 * (probs + self._member_mean(mirrored))
        return probs

    def _member_mean(self, outputs: Tensor) -> Tensor:
        """The loss's probabilities of ``outputs``, averaged over an ensemble's members."""
        if len(self.members) == 1:
            return self.criterion.probabilities(outputs)
        n, k = outputs.shape[:2]
        probs = self.criterion.probabilities(outputs.flatten(0, 1))
        return probs.unflatten(0, (n, k)).mean(dim=1)

    def _loss(
        self, outputs: Tensor, y: Tensor, dist: Tensor | None, features: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The loss to minimise and the loss to report: for an ensemble, the sum of the
        members' losses (each member gets its own loss's gradient, as if trained alone) and
        their mean (comparable with one network's)."""
        if len(self.members) == 1:
            loss: Tensor = self.criterion(outputs, y, dist, features)
            return loss, loss
        total = torch.stack(
            [self.criterion(outputs[:, k], y, dist, None) for k in range(outputs.shape[1])]
        ).sum()
        return total, total / outputs.shape[1]

    def decode_all(self, probs: Tensor, rules: Sequence[str] = RULES) -> dict[str, Tensor]:
        """Predicted classes of every rule of :data:`emdloss.vocabulary.RULES` (or of
        ``rules``)."""
        return {rule: self.decode_rule(probs, rule) for rule in rules}

    def decode_rule(self, probs: Tensor, rule: str) -> Tensor:
        """Predicted classes of one rule (with this task's decision cost and positions)."""
        if rule == "bayes":
            return decode(probs, rule, ground_distance=self.decision_cost.to(probs))
        if rule == "expected" and self.positions is not None:
            return decode(probs, rule, positions=self.positions)
        return decode(probs, rule)

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer([p for p in self.parameters() if p.requires_grad])

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        """This task's optimiser over ``params`` (its own, or the grouped engine's stacked ones:
        AdamW and SGD update elementwise)."""
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.momentum > 0,
                weight_decay=self.weight_decay,
            )
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer_name!r}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` under the configured schedule.

        Examples
        --------
        >>> from emdloss.training.losses import build_loss
        >>> net = nn.Sequential(nn.Linear(1, 2))
        >>> net.features, net.head = (lambda x: x), net[0]
        >>> config = TrainConfig(lr=1.0, lr_decay=0.5)
        >>> task = OrdinalTask(net, build_loss("ce", 2), num_classes=2, config=config)
        >>> task.lr_at(2)
        0.25
        """
        if self.scheduler_name == "exponential":
            return self.lr * self.lr_decay**epoch
        if self.scheduler_name == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        return self.lr

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        epoch = self.current_epoch
        seed_epoch(self.seed, epoch)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.lr_at(epoch)
        self.train_loss_mean.reset()
        # The per-step loss is logged only for a progress bar to show (a log call per step
        # costs more than the step of a small network).
        self._log_steps = self.trainer.progress_bar_callback is not None

    def _unpack(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        x, y = batch[0], batch[1]
        dist = batch[2] if len(batch) > 2 else None
        return x, y.long(), dist

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y, dist = self._unpack(batch)
        if len(self.members) > 1:
            loss, shown = self._loss(self(x), y, dist, None)
        else:
            features = self.features(x)
            loss, shown = self._loss(
                self.head(features), y, dist, features if self.criterion.needs_features else None
            )
        self._note_loss(loss, batch_idx)
        self.train_loss_mean.update(shown.detach(), weight=x.shape[0])
        if self._log_steps:
            self.log("train_loss", shown.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _note_loss(self, loss: Tensor, batch_idx: int) -> None:
        """Remember the first non-finite loss on the device; read it on the host only every
        ``FINITE_CHECK_EVERY`` steps (every step on the CPU, where reading costs nothing), so
        that the check forces no device synchronisation per step."""
        value = loss.detach().reshape(())
        if self._bad is None or self._bad[0].device != value.device:
            self._bad = (
                torch.full((), -1, dtype=torch.long, device=value.device),
                torch.zeros((), dtype=value.dtype, device=value.device),
            )
        bad_step, bad_value = self._bad
        first = ~torch.isfinite(value) & (bad_step < 0)
        self._bad = (torch.where(first, batch_idx, bad_step), torch.where(first, value, bad_value))
        if _host_reads_are_free(value.device) or (batch_idx + 1) % FINITE_CHECK_EVERY == 0:
            self._raise_if_loss_was_nonfinite()

    def _raise_if_loss_was_nonfinite(self) -> None:
        if self._bad is None or int(self._bad[0]) < 0:
            return
        step, value = int(self._bad[0]), float(self._bad[1])
        self._bad = None
        raise FloatingPointError(
            f"training loss is {value} at epoch {self.current_epoch}, batch {step}; lower the "
            f"learning rate (lr={self.lr_at(self.current_epoch):g})"
        )

    def on_train_epoch_end(self) -> None:
        self._raise_if_loss_was_nonfinite()
        # Runs before the epoch-end checkpoint is written, so the checkpoint holds the
        # recipe/learned-matrix state of the next epoch and the complete history row.
        refresh = getattr(self.criterion, "refresh", None)
        if refresh is not None and getattr(self.criterion, "extra_pass", False):
            datamodule: Any = getattr(self.trainer, "datamodule", None)
            image = datamodule.train_set[0][0].ndim == 3  # mirror images, as the authors did
            loader = datamodule.train_eval_dataloader()
            refresh(_Features(self), _on_device(loader, self.device), mirror=image)
        self.criterion.step_epoch()
        row = {"epoch": float(self.current_epoch), "lr": self.lr_at(self.current_epoch)}
        row["train_loss"] = float(self.train_loss_mean.compute())
        row["epoch_seconds"] = time.perf_counter() - self._epoch_start
        row.update(self._pending)
        self._pending = {}
        self.history.append(row)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(
        self,
        batch: Sequence[Tensor],
        metrics: nn.ModuleDict,
        rules: Sequence[str] = RULES,
        *,
        part: str | None = None,
    ) -> Tensor:
        x, y, dist = self._unpack(batch)
        outputs = self(x)
        mirrored = self(torch.flip(x, dims=[-1])) if self.tta and x.ndim == 4 else None
        probs = self.probabilities(outputs, mirrored)
        for rule, preds in self.decode_all(probs, rules).items():
            _metric(metrics, rule).update(probs, y, preds)
        if self.distribution and part is not None:
            if dist is None:
                raise ValueError("distribution=True needs items (x, y, dist)")
            self._distribution_metric(part).update(probs, dist)
        return probs

    def _distribution_metric(self, part: str) -> Any:
        return self.distribution_metrics[part]

    def _distribution_compute(self, part: str) -> dict[str, float]:
        if not self.distribution:
            return {}
        metric = self._distribution_metric(part)
        results = {key: float(value) for key, value in metric.compute().items()}
        metric.reset()
        self.distribution_results[part] = results
        return results

    def _validation_rules(self) -> tuple[str, ...]:
        """While fitting, only the monitored rule: model selection and ``history.csv`` read
        nothing else, and the best state is evaluated on every rule once, after fitting."""
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        return (self.monitor_rule,) if fitting else RULES

    def on_validation_epoch_start(self) -> None:
        self.val_loss_mean.reset()
        for rule in self.val_metrics:
            _metric(self.val_metrics, rule).reset()
        if self.distribution:
            self._distribution_metric("val").reset()

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y, dist = self._unpack(batch)
        self._evaluate(batch, self.val_metrics, self._validation_rules(), part="val")
        # The recipe's warm-up and learned matrix apply here too; features are only used to
        # learn from training data, so none are passed.
        _, loss = self._loss(self(x), y, dist, None)
        self.val_loss_mean.update(loss.detach(), weight=x.shape[0])

    def on_validation_epoch_end(self) -> None:
        results = _compute(self.val_metrics, self._validation_rules())
        val_loss = float(self.val_loss_mean.compute())
        self.results["val"] = results
        chosen = dict(results[self.monitor_rule])
        chosen["loss"] = val_loss
        chosen.update(self._distribution_compute("val"))
        shown = ("kl", "emd2") if self.distribution else ("mae", "qwk")
        for key, value in chosen.items():
            self.log(f"val_{key}", value, prog_bar=key in shown, sync_dist=False)
        # What model selection sees: the monitored value, or the worst possible value in epochs
        # the loss rules out (the recipe's cross-entropy warm-up).
        eligible = self.criterion.selectable(self.epochs)
        worst = math.inf if self.monitor_mode == "min" else -math.inf
        self.log(SELECT_KEY, chosen[self.monitor] if eligible else worst, sync_dist=False)
        if not self.trainer.sanity_checking:
            self._pending = {f"val_{key}": value for key, value in chosen.items()}

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []
        self.test_targets = []
        for rule in self.test_metrics:
            _metric(self.test_metrics, rule).reset()
        if self.distribution:
            self._distribution_metric("test").reset()

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        probs = self._evaluate(batch, self.test_metrics, part="test")
        self.test_outputs.append((probs.detach().cpu(), batch[1].detach().cpu().long()))
        if self.distribution:
            self.test_targets.append(batch[2].detach().cpu())

    def on_test_epoch_end(self) -> None:
        self.results["test"] = _compute(self.test_metrics)
        self._distribution_compute("test")
        for key, value in self.results["test"][self.monitor_rule].items():
            self.log(f"test_{key}", value, sync_dist=False)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[_HISTORY_KEY] = [dict(row) for row in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = [dict(row) for row in checkpoint.get(_HISTORY_KEY, [])]


class _Features(nn.Module):
    """The task seen as a feature extractor (normalisation included) for the extra pass."""

    def __init__(self, task: OrdinalTask) -> None:
        super().__init__()
        self.task = task

    def features(self, x: Tensor) -> Tensor:
        return self.task.features(x)


def _on_device(loader: Any, device: torch.device) -> Any:
    for batch in loader:
        yield [part.to(device) for part in batch]


def _metric(metrics: nn.ModuleDict, rule: str) -> OrdinalMetrics:
    metric = metrics[rule]
    assert isinstance(metric, OrdinalMetrics)
    return metric


def _compute(
    metrics: nn.ModuleDict, rules: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    return {
        rule: {key: float(value) for key, value in _metric(metrics, rule).compute().items()}
        for rule in (metrics if rules is None else rules)
    }


def _head_in_features(model: nn.Module) -> int:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return int(head.in_features)
    raise TypeError("the model must have a `head` nn.Linear (an emdloss.models.OrdinalModel)")
