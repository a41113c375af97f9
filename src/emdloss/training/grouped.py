"""``train_group``: many runs that share a shape, trained as one vectorised model.

A comparison trains the same small network on the same kind of data many times: seeds, folds,
hold-outs, losses. :func:`train_group` trains such runs together. Their weights are stacked
(one ``(R, out, in)`` tensor per layer) and every step is one batched matrix product per layer
for all runs, yet each run keeps what makes it a run of its own:

- its initial weights: the run's network is built exactly as :func:`emdloss.training.train`
  builds it under the run's seed, then stacked;
- its batch order: the permutation of :class:`~emdloss.training._sampling.EpochShuffleSampler`
  for ``(seed, epoch)``, and its own split of the data (seed, fold);
- its loss: each run's own loss object is called on its slice of the outputs (a loss with state,
  such as the learned ground distance of ``xemd1``, keeps its own state; a group may mix losses);
- its optimiser state: Adam(W) and SGD are elementwise, so one optimiser over the stacked tensors
  is each run's optimiser (the runs of a group share the optimiser settings, see
  :func:`group_key`);
- its model selection (the best validation epoch by the same rule as the per-run path's
  checkpoint callback) and its failure: a run whose loss becomes non-finite fails alone (its
  slice stops counting; the other runs' numbers do not depend on it);
- its run directory: ``config.yaml``, ``data.json``, ``history.csv``, ``predictions_test.csv``,
  the plots, ``checkpoints/best.ckpt`` and ``last.ckpt``, and ``metrics.json`` (last), written
  by the same writers with the same keys; evaluation uses the same task and metric code.

Equal numbers: on the CPU every run's history, selected epoch, metrics and predictions equal the
per-run path's bit for bit (``tests/training/test_grouped.py``). That needs the backward of the
stacked linear layer to form its weight gradient as ``grad^T @ input`` (as ``F.linear``'s backward
does), and heads other than a linear layer with several outputs (``l2``'s one output, whose
one-column product takes another BLAS path, and CORAL's layer) to run each run's own head
module on its slice of the features. The checkpoints hold the model's ``state_dict``,
``epoch`` and the history that :func:`emdloss.training.evaluate` reads; they carry no Lightning
loop state, so a run of a group that was interrupted is trained again from the start rather
than resumed.

What is not vectorised (:func:`why_not_grouped` says why, and compare trains those runs on the
per-run path): networks other than the plain ``mlp`` (dropout or batch norm included), the
authors' extra feature pass, precisions other than ``32-true``, several devices or nodes, and a
resume.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from emdloss import _ordinal
from emdloss.training import rundir
from emdloss.training.config import TrainConfig

__all__ = ["GROUP_VARYING", "group_key", "train_group", "why_not_grouped"]

#: Options in which the runs of one group may differ: everything else (model, budget,
#: optimiser, data options, device) is shared.
GROUP_VARYING: frozenset[str] = frozenset(
    {
        "seed",
        "fold",
        "loss",
        "loss_options",
        "ground_matrix",
        "ground_power",
        "warmup_epochs",
        "ce_weight",
        "emd_weight",
        "monitor",
        "monitor_rule",
        "evaluate_test",
        "output",
        "overwrite",
        "progress",
    }
)


def why_not_grouped(config: TrainConfig) -> str | None:
    """Why ``config`` cannot train in a group (``None``: it can).

    Examples
    --------
    >>> why_not_grouped(TrainConfig(dataset="lev", model="mlp", loss="ce"))
    >>> why_not_grouped(TrainConfig(dataset="lev", model="cnn", loss="ce"))
    'model cnn (only the mlp is vectorised)'
    """
    if config.model not in (None, "mlp"):
        return f"model {config.model} (only the mlp is vectorised)"
    options = config.model_options
    if float(options.get("dropout", 0.0) or 0.0) > 0.0:
        return "mlp with dropout (per-run random masks are not vectorised)"
    if options.get("batchnorm"):
        return "mlp with batch norm (not vectorised)"
    if config.loss_options.get("feature_pass") == "extra":
        return "the extra feature pass of the learned ground distance"
    if str(config.precision) != "32-true":
        return f"precision {config.precision}"
    if str(config.devices) not in ("auto", "1") or config.num_nodes != 1:
        return "several devices or nodes"
    if config.resume:
        return "a resume from a checkpoint"
    return None


def group_key(config: TrainConfig) -> tuple[tuple[str, str], ...]:
    """What the runs of one group share: every option outside :data:`GROUP_VARYING`.

    Runs with equal keys (and, once their data is loaded, equal split sizes) train together.
    """
    values = config.to_dict()
    return tuple(sorted((k, repr(v)) for k, v in values.items() if k not in GROUP_VARYING))


# ---------------------------------------------------------------------------- the stacked net
class _StackedLinear(torch.autograd.Function):
    """``x (R, B, in) @ W (R, out, in)^T + b (R, out)`` whose backward forms each run's gradient
    with the products of ``F.linear``'s backward (bitwise equal per run on the CPU)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


def _stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    out: Tensor = _StackedLinear.apply(x, weight, bias)
    return out


def _layers(model: nn.Module) -> list[nn.Linear] | None:
    """The linear layers of a plain mlp body (Flatten, [Linear, ReLU]...), else ``None``."""
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Sequential) or not isinstance(
        getattr(model, "head", None), nn.Module
    ):
        return None
    modules = list(body)
    if not modules or not isinstance(modules[0], nn.Flatten):
        return None
    linears: list[nn.Linear] = []
    rest = modules[1:]
    if len(rest) % 2:
        return None
    for linear, act in zip(rest[0::2], rest[1::2], strict=True):
        if not isinstance(linear, nn.Linear) or linear.bias is None or not isinstance(act, nn.ReLU):
            return None
        linears.append(linear)
    return linears or None


class _Net:
    """The stacked parameters of R mlps: shared body shapes, heads grouped by width."""

    def __init__(self, tasks: Sequence[Any], device: torch.device) -> None:
        bodies = []
        for task in tasks:
            layers = _layers(task.model)
            if layers is None:
                raise ValueError("train_group needs plain mlp models (Flatten, Linear, ReLU)")
            bodies.append(layers)
        self.body: list[tuple[Tensor, Tensor]] = []
        for depth in range(len(bodies[0])):
            weights = [layers[depth].weight.detach() for layers in bodies]
            biases = [layers[depth].bias.detach() for layers in bodies]
            self.body.append((_leaf(weights, device), _leaf(biases, device)))
        # Heads of one kind and shape are stacked: linear heads with several outputs run as one
        # batched product; the others (l2's one output, whose one-column product takes another
        # BLAS path, and CORAL's layer) run each run's own head module on its slice.
        kinds: dict[tuple[Any, ...], list[int]] = {}
        for r, task in enumerate(tasks):
            head = task.model.head
            shapes = tuple((n, tuple(p.shape)) for n, p in head.named_parameters())
            kinds.setdefault((type(head).__qualname__, shapes), []).append(r)
        self.heads: list[tuple[list[int], list[str], list[Tensor]]] = []
        for members in kinds.values():
            heads = [tasks[r].model.head for r in members]
            names = [n for n, _ in heads[0].named_parameters()]
            params = [
                _leaf([dict(h.named_parameters())[n].detach() for h in heads], device)
                for n in names
            ]
            self.heads.append((members, names, params))
        self.modules = [task.model.head for task in tasks]
        self.size = len(tasks)

    def parameters(self) -> list[Tensor]:
        params = [p for pair in self.body for p in pair]
        for _, _, stacked in self.heads:
            params += stacked
        return params

    def features(self, x: Tensor) -> Tensor:
        h = x.flatten(2)
        for weight, bias in self.body:
            h = torch.relu(_stacked_linear(h, weight, bias))
        return h

    def outputs(self, features: Tensor) -> list[Tensor]:
        """Outputs of every run, in run order (each (B, outputs))."""
        from torch.func import functional_call

        out: list[Tensor | None] = [None] * self.size
        for members, names, params in self.heads:
            index = torch.tensor(members, device=features.device)
            f = features if len(members) == self.size else features.index_select(0, index)
            linear = isinstance(self.modules[members[0]], nn.Linear)
            if linear and names == ["weight", "bias"] and params[0].shape[1] > 1:
                # unbind: one backward for all slices (indexing would cost R full-size zeros)
                stacked = _stacked_linear(f, params[0], params[1])
                for r, o in zip(members, stacked.unbind(0), strict=True):
                    out[r] = o
                continue
            slices = [p.unbind(0) for p in params]
            for j, (r, fr) in enumerate(zip(members, f.unbind(0), strict=True)):
                values = {n: s[j] for n, s in zip(names, slices, strict=True)}
                out[r] = functional_call(self.modules[r], values, (fr,))
        return [o for o in out if o is not None]

    def _slots(self, r: int) -> list[tuple[str, Tensor, int]]:
        """Run ``r``'s parameters in its model's order: (name, stacked tensor, row)."""
        slots: list[tuple[str, Tensor, int]] = []
        for depth, (weight, bias) in enumerate(self.body):
            slots += [(f"{depth}.weight", weight, r), (f"{depth}.bias", bias, r)]
        for members, names, params in self.heads:
            if r in members:
                j = members.index(r)
                slots += [(f"head.{n}", p, j) for n, p in zip(names, params, strict=True)]
        return slots

    def copy_into(self, r: int, model: nn.Module) -> None:
        """Write run ``r``'s weights into its own (per-run) model."""
        layers = _layers(model)
        assert layers is not None
        head = model.head
        assert isinstance(head, nn.Module)
        by_name = dict(head.named_parameters())
        with torch.no_grad():
            for (weight, bias), layer in zip(self.body, layers, strict=True):
                layer.weight.copy_(weight[r])
                layer.bias.copy_(bias[r])
            for name, stacked, row in self._slots(r):
                if name.startswith("head."):
                    by_name[name[len("head.") :]].copy_(stacked[row])

    def optimizer_state(self, r: int, optimizer: torch.optim.Optimizer) -> Any:
        """Run ``r``'s slice of the optimiser state, in the layout of a per-run optimiser."""
        slots = self._slots(r)
        state: dict[int, dict[str, Any]] = {}
        for i, (_, param, row) in enumerate(slots):
            entry = optimizer.state.get(param, {})
            state[i] = {k: _row(v, row) for k, v in entry.items()}
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(slots)))}
            for g in optimizer.param_groups
        ]
        return {"state": state, "param_groups": groups}


def _row(value: Any, row: int) -> Any:
    if isinstance(value, Tensor):
        return value[row].clone() if value.ndim > 0 else value.clone()
    return copy.copy(value)


def _leaf(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    return torch.stack([t.to(device) for t in tensors]).requires_grad_(True)


# ---------------------------------------------------------------------------- one run's state
@dataclass
class _Run:
    config: TrainConfig
    run_dir: Path
    dataset: Any
    task: Any
    threads: int
    description: dict[str, Any]
    tensors: dict[str, tuple[Tensor, Tensor, Tensor | None]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int = -1
    best_state: dict[str, Tensor] = field(default_factory=dict)
    best_history: list[dict[str, float]] = field(default_factory=list)
    pending: dict[str, float] = field(default_factory=dict)
    select_value: float = math.nan
    error: BaseException | None = None


def _split_tensors(
    task: Any, split: Any, device: torch.device
) -> tuple[Tensor, Tensor, Tensor | None]:
    """A whole split as the data loader collates it and the task unpacks it: inputs, targets
    (class indices, or whatever the task's ``_unpack`` makes of them) and distributions."""
    from torch.utils.data import default_collate

    batch = default_collate([split[i] for i in range(len(split))])
    x, y, dist = task._unpack([part.to(device) for part in batch])
    return x, y, dist


def _shape(run: _Run) -> tuple[Any, ...]:
    x, _, dist = run.tensors["train"]
    sizes = tuple(len(run.tensors[part][1]) for part in ("train", "val", "test"))
    return sizes, tuple(x.shape[1:]), dist is not None, run.dataset.num_classes


def _device(config: TrainConfig) -> torch.device:
    if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _prepare(
    config: TrainConfig, device: torch.device, loaded: dict[tuple[Any, ...], Any] | None = None
) -> _Run:
    """Exactly the per-run path's set-up: seed, data, threads, task, run directory.

    ``loaded`` holds the data sets already loaded for the group by (seed, fold): the runs of
    a group share every other option, so runs of one seed and fold (the losses of a
    comparison) read the same data, loaded once and never modified (Movie's 1,869 columns took
    2-10 s a load, and 50 copies 6 GB).
    """
    import lightning.pytorch as pl

    from emdloss.training._build import build_task, default_model, load_data
    from emdloss.training._context import announce_data, describe_data, use_threads
    from emdloss.training._train import _prepare_run_dir

    config, run_dir, _ = _prepare_run_dir(config)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    key = (config.seed, config.fold)
    dataset = loaded.get(key) if loaded is not None else None
    if dataset is None:
        dataset = load_data(config)
        if loaded is not None:
            loaded[key] = dataset
    threads = use_threads(config, config.model or default_model(dataset))
    task = build_task(config, dataset)
    description = describe_data(config, dataset)
    announce_data(description, verbose=config.progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / rundir.CONFIG_FILE)
    rundir.write_data_record(run_dir, dataset, description=description)
    run = _Run(config, run_dir, dataset, task, threads, description)
    task.to(device)
    for part in ("train", "val", "test"):
        x, y, dist = _split_tensors(task, getattr(dataset, part), device)
        if loaded is not None:  # the inputs of one data set: one tensor for its runs
            shared = loaded.setdefault((key, part), x)
            x = shared if shared.shape == x.shape and torch.equal(shared, x) else x
        run.tensors[part] = (x, y, dist)
    return run


def train_group(configs: Sequence[TrainConfig]) -> list[rundir.RunResult | BaseException]:
    """Train runs as one vectorised model; write each run's directory as ``train`` would.

    Parameters
    ----------
    configs : sequence of TrainConfig
        Runs with equal :func:`group_key` for which :func:`why_not_grouped` is ``None``. Runs whose
        splits turn out to differ in size train in separate groups.

    Returns
    -------
    list
        Per run, in order: its :class:`~emdloss.training.rundir.RunResult`, or the exception
        that ended it (a failed run does not stop the others).

    Raises
    ------
    ValueError
        For configs that cannot share a group (different keys, or an unsupported option).
    """
    if not configs:
        return []
    keys = {group_key(c) for c in configs}
    if len(keys) > 1:
        raise ValueError("train_group: the runs differ in options that a group shares")
    for config in configs:
        reason = why_not_grouped(config)
        if reason is not None:
            raise ValueError(f"train_group cannot train {config.output}: {reason}")
    from emdloss.training._build import ignore_expected_warnings
    from emdloss.training._context import kept_threads

    results: list[rundir.RunResult | BaseException | None] = [None] * len(configs)
    device = _device(configs[0])
    with warnings.catch_warnings(), kept_threads():
        ignore_expected_warnings()
        with _ordinal.implementation(configs[0].implementation):
            runs: list[tuple[int, _Run]] = []
            loaded: dict[tuple[Any, ...], Any] = {}
            for i, config in enumerate(configs):
                try:
                    run = _prepare(config, device, loaded)
                    _check_vectorisable(run.task)
                    runs.append((i, run))
                except Exception as error:
                    results[i] = error
            by_shape: dict[tuple[Any, ...], list[tuple[int, _Run]]] = {}
            for i, run in runs:
                by_shape.setdefault(_shape(run), []).append((i, run))
            for members in by_shape.values():
                group = [run for _, run in members]
                try:
                    _fit(group, device)
                except Exception as error:  # of the group as a whole: each run reports it
                    for run in group:
                        run.error = run.error or error
                for i, run in members:
                    results[i] = run.error if run.error is not None else _finished(run)
    return [r if r is not None else RuntimeError("not trained") for r in results]


def _finished(run: _Run) -> rundir.RunResult | BaseException:
    try:
        return _finish(run)
    except Exception as error:  # this run's files (a full disk, ...): the others go on
        return error


def _check_vectorisable(task: Any) -> None:
    if _layers(task.model) is None or task.tta:
        raise ValueError("train_group needs a plain mlp on a table")
    trained = [p for p in task.parameters() if p.requires_grad]
    if len(trained) != len(list(task.model.parameters())):
        raise ValueError(f"train_group: loss {task.criterion.name} has trainable parameters")


# ---------------------------------------------------------------------------- training
def _fit(runs: list[_Run], device: torch.device) -> None:
    from emdloss.training._sampling import epoch_seed

    config = runs[0].config
    net = _Net([run.task for run in runs], device)
    optimizer = runs[0].task.make_optimizer(net.parameters())
    size = len(runs)
    batch = int(config.batch_size)
    # Runs that share their inputs (one data set, several losses) share one stacked copy:
    # run r reads the inputs of x_train[x_rows[r]].
    inputs: list[Tensor] = []
    which: list[int] = []
    for run in runs:
        x = run.tensors["train"][0]
        found = next((k for k, other in enumerate(inputs) if other is x), None)
        if found is None:
            inputs.append(x)
            found = len(inputs) - 1
        which.append(found)
    x_train = torch.stack(inputs)
    x_rows = torch.tensor(which, device=device)[:, None]
    y_train = torch.stack([run.tensors["train"][1] for run in runs])
    dists = [run.tensors["train"][2] for run in runs]
    d_train = None if dists[0] is None else torch.stack([d for d in dists if d is not None])
    n = x_train.shape[1]
    rows = torch.arange(size, device=device)[:, None]
    zero = torch.zeros((), device=device)
    needs_features = any(run.task.criterion.needs_features for run in runs)
    for run in runs:
        run.task.train()
    for epoch in range(int(config.epochs)):
        start = time.perf_counter()
        lr = runs[0].task.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        orders = []
        for run in runs:
            generator = torch.Generator()
            generator.manual_seed(epoch_seed(run.config.seed, epoch, stream=0))
            orders.append(torch.randperm(n, generator=generator))
        order = torch.stack(orders).to(device)
        # torchmetrics' MeanMetric, run by run: sum of value * weight, sum of weights (float32).
        loss_sum = torch.zeros(size, device=device)
        weight_sum = torch.zeros(size, device=device)
        unit = _train_loss_weights(runs)
        for step, begin in enumerate(range(0, n, batch)):
            index = order[:, begin : begin + batch]
            xb = x_train[x_rows, index]
            yb = y_train[rows, index]
            db = None if d_train is None else d_train[rows, index]
            features = net.features(xb)
            outputs = net.outputs(features)
            per_run = features.unbind(0) if needs_features else None
            losses: list[Tensor] = []
            for r, run in enumerate(runs):
                crit = run.task.criterion
                loss = zero
                if run.error is None:
                    try:
                        loss = crit(
                            outputs[r],
                            yb[r],
                            None if db is None else db[r],
                            per_run[r] if per_run is not None and crit.needs_features else None,
                        )
                    except Exception as error:  # this run's loss fails it, not the group
                        run.error, loss = error, zero
                    if not bool(torch.isfinite(loss.detach())):
                        # As the per-run path: this run fails here; the others go on.
                        run.error = FloatingPointError(
                            f"training loss is {float(loss.detach())} at epoch {epoch}, batch {step}; "
                            f"lower the learning rate (lr={run.task.lr_at(epoch):g})"
                        )
                        loss = zero
                losses.append(loss)
            stacked = torch.stack(losses)
            if not stacked.requires_grad:  # every run of the group has failed
                return
            optimizer.zero_grad(set_to_none=True)
            stacked.sum().backward()
            optimizer.step()
            weight = torch.where(unit, 1.0, float(xb.shape[1])).to(device)
            # MeanMetric casts to its float32 state first (a peer loss may be float64).
            loss_sum += stacked.detach().to(loss_sum.dtype) * weight
            weight_sum += weight
        _validate(runs, net, epoch, batch)
        seconds = (time.perf_counter() - start) / size
        train_loss = (loss_sum / weight_sum).tolist()
        for r, run in enumerate(runs):
            if run.error is not None:
                continue
            run.task.criterion.step_epoch()
            row = {"epoch": float(epoch), "lr": run.task.lr_at(epoch)}
            row["train_loss"] = float(train_loss[r])
            row["epoch_seconds"] = seconds
            row.update(run.pending)
            run.history.append(row)
            _select(run, net, r, epoch)
    for r, run in enumerate(runs):
        if run.error is None:
            run.task.history = list(run.history)
            net.copy_into(r, run.task.model)
            _write_checkpoint(run, rundir.LAST_CHECKPOINT, _checkpoint(run, net, r, optimizer))


def _train_loss_weights(runs: list[_Run]) -> Tensor:
    # MeanMetric(nan_strategy="disable") weighs every update by one (torchmetrics ignores the
    # weight then); the fallback "warn" weighs by the batch size. As the task's metric does.
    return torch.tensor(
        [getattr(run.task.train_loss_mean, "nan_strategy", "warn") == "disable" for run in runs]
    )


def _validate(runs: list[_Run], net: _Net, epoch: int, batch: int) -> None:
    """Each run's validation metrics of its monitored rule and loss, batch by batch as the
    per-run path's loader gives them, with the task's own metric objects."""
    from emdloss.training.module import _compute

    x_val = torch.stack([run.tensors["val"][0] for run in runs])
    with torch.no_grad():
        for run in runs:
            _metric_of(run).reset()
            if run.task.distribution:
                run.task._distribution_metric("val").reset()
        loss_sum = [torch.zeros(()) for _ in runs]
        weight_sum = [torch.zeros(()) for _ in runs]
        n = x_val.shape[1]
        for begin in range(0, n, batch):
            features = net.features(x_val[:, begin : begin + batch])
            outputs = net.outputs(features)
            for r, run in enumerate(runs):
                if run.error is not None:
                    continue
                _, y, dist = run.tensors["val"]
                yb = y[begin : begin + batch]
                db = None if dist is None else dist[begin : begin + batch]
                task = run.task
                probs = task.criterion.probabilities(outputs[r])
                preds = task.decode_rule(probs, task.monitor_rule)
                _metric_of(run).update(probs, yb, preds)
                if task.distribution and db is not None:  # distribution targets' measures
                    task._distribution_metric("val").update(probs, db)
                loss = task.criterion(outputs[r], yb, db, None).detach().cpu()
                loss = loss.to(loss_sum[r].dtype)  # as MeanMetric casts to its float32 state
                weight = torch.tensor(float(len(yb)))
                loss_sum[r] = loss_sum[r] + (loss * weight).sum()
                weight_sum[r] = weight_sum[r] + weight.sum()
    for r, run in enumerate(runs):
        if run.error is not None:
            continue
        task = run.task
        chosen = dict(_compute(_rule_dict(run))[task.monitor_rule])
        chosen["loss"] = float(loss_sum[r] / weight_sum[r])
        chosen.update(task._distribution_compute("val"))
        run.pending = {f"val_{key}": value for key, value in chosen.items()}
        eligible = task.criterion.selectable(task.epochs)
        worst = math.inf if task.monitor_mode == "min" else -math.inf
        # Lightning logs the value as a float32 tensor; the checkpoint callback compares those.
        value = float(torch.tensor(chosen[task.monitor] if eligible else worst))
        run.select_value = value


def _metric_of(run: _Run) -> Any:
    return run.task.val_metrics[run.task.monitor_rule]


def _rule_dict(run: _Run) -> nn.ModuleDict:
    return nn.ModuleDict({run.task.monitor_rule: _metric_of(run)})


def _select(run: _Run, net: _Net, r: int, epoch: int) -> None:
    """The checkpoint callback's rule: the first epoch, then every strict improvement (a NaN
    counts as the worst value)."""
    task = run.task
    value = run.select_value
    if math.isnan(value):
        value = math.inf if task.monitor_mode == "min" else -math.inf
    best = run.best_score
    better = best is None or (value < best if task.monitor_mode == "min" else value > best)
    if not better:
        return
    run.best_score = value
    run.best_epoch = epoch
    net.copy_into(r, task.model)
    run.best_state = {k: v.detach().clone() for k, v in task.state_dict().items()}
    run.best_history = [dict(row) for row in run.history]


def _checkpoint(
    run: _Run, net: _Net | None, r: int, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    import lightning

    task = run.task
    steps = math.ceil(len(run.tensors["train"][1]) / int(run.config.batch_size))
    epoch = len(run.history) - 1
    state = {k: v.detach().clone().cpu() for k, v in task.state_dict().items()}
    return {
        "epoch": epoch,
        "global_step": steps * (epoch + 1),
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": state,
        "optimizer_states": []
        if net is None or optimizer is None
        else [net.optimizer_state(r, optimizer)],
        "lr_schedulers": [],
        "emdloss_history": [dict(row) for row in run.history],
        "emdloss_engine": "grouped",
    }


def _write_checkpoint(run: _Run, name: str, checkpoint: dict[str, Any]) -> None:
    import io

    from emdloss._atomic import write_bytes

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    directory = run.run_dir / rundir.CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    write_bytes(directory / name, buffer.getvalue())


# ---------------------------------------------------------------------------- evaluation
def _evaluate(run: _Run, splits: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """The per-run evaluation (``evaluate_checkpoint``) without a trainer: the best state in
    the run's task, every rule's metrics over the loader's batches."""
    from emdloss.training._build import build_task
    from emdloss.training.module import _compute, _metric

    task = build_task(run.config, run.dataset).to(run.tensors["val"][0].device)
    task.load_state_dict(run.best_state)
    task.history = [dict(row) for row in run.best_history]
    task.eval()
    metrics: dict[str, Any] = {}
    batch = int(run.config.batch_size)
    with torch.no_grad():
        for split in splits:
            table = task.val_metrics if split == "val" else task.test_metrics
            for rule in table:
                _metric(table, rule).reset()
            if split == "test":
                task.test_outputs = []
                task.test_targets = []
            if task.distribution:
                task._distribution_metric(split).reset()
            x, y, dist = run.tensors[split]
            for begin in range(0, len(y), batch):
                parts = [x[begin : begin + batch], y[begin : begin + batch]]
                if dist is not None:
                    parts.append(dist[begin : begin + batch])
                probs = task._evaluate(parts, table, part=split)
                if split == "test":
                    task.test_outputs.append((probs.detach().cpu(), parts[1].detach().cpu()))
                    if task.distribution:
                        task.test_targets.append(parts[2].detach().cpu())
            metrics[split] = _compute(table)
            task.results[split] = metrics[split]
            task._distribution_compute(split)
        if task.distribution:  # the measures of distribution targets, as the per-run path
            metrics["distribution"] = {s: task.distribution_results[s] for s in splits}
    return metrics, task


def _finish(run: _Run) -> rundir.RunResult:
    """Evaluate the best state and write the run's files, as ``train`` does (metrics last)."""
    from emdloss.training._train import write_finished_run

    best_checkpoint = {
        **_checkpoint(run, None, 0, None),
        "epoch": run.best_epoch,
        "state_dict": {k: v.cpu() for k, v in run.best_state.items()},
        "emdloss_history": [dict(row) for row in run.best_history],
    }
    _write_checkpoint(run, rundir.BEST_CHECKPOINT, best_checkpoint)
    splits = ("val", "test") if run.config.evaluate_test else ("val",)
    evaluated, task = _evaluate(run, splits)
    return write_finished_run(
        run.config, run.dataset, run.threads, run.history, run.best_epoch + 1, evaluated, task
    )
