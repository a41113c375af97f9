"""``train_group``: many runs that share a shape, trained as one vectorised model.

A comparison trains the same small network on the same kind of data many times: seeds, folds,
hold-outs, losses. :func:`train_group` trains such runs together. Their weights are stacked
(one ``(R, ...)`` tensor per parameter; the stacked networks are in
:mod:`emdloss.training._stacked`): for the ``mlp`` every step is one batched matrix product
per layer for all runs; for the ``cnn`` (conv-BN-ReLU stages) each run's convolutions run on
its slice on the CPU and as one grouped convolution elsewhere. Each run keeps what makes it a
run of its own:

- its initial weights: the run's network is built exactly as :func:`emdloss.training.train`
  builds it under the run's seed, then stacked; a deep ensemble (``ensemble = K``, shared by a
  group) is K networks built one after another as ``train`` builds them, and each is a slot of
  the stack of its own (:meth:`~emdloss.training._stacked.StackedNet.run_outputs` stacks a run's
  slots as :class:`~emdloss.models.OrdinalEnsemble` stacks its members, and the task's own
  code sums their losses and averages their probabilities);
- its batch order: the items its own sampler draws for ``(seed, epoch)`` (the permutation of
  :class:`~emdloss.training._sampling.EpochShuffleSampler`, or with ``vote_weights`` the
  weighted draws of :class:`~emdloss.training._sampling.EpochWeightedSampler`), and its own
  split of the data (seed, fold);
- its loss: each run's own loss object is called on its slice of the outputs (a loss with state,
  such as the learned ground distance of ``xemd1``, keeps its own state; a group may mix losses);
- its optimiser state: Adam(W) and SGD are elementwise, so one optimiser over the stacked tensors
  is each run's optimiser (the runs of a group share the optimiser settings, see
  :func:`group_key`);
- its dropout masks: the per-run path reseeds torch's global generator at every epoch start
  from ``(seed, epoch)`` (:func:`~emdloss.training._sampling.seed_epoch`), and in training
  nothing but its dropout layers draws from it (its loaders draw from their own generators,
  there is no sanity check; measured by comparing the global state before every dropout
  call). Each run here has its own generator, seeded at every epoch start as the per-run path
  seeds the global one, and its masks are drawn from it with ATen's own call
  (:func:`~emdloss.training._stacked.stacked_dropout`) in the order of the run's own forward:
  an ensemble's members one after another, each member's dropout layers in turn. So run
  ``r``'s masks are the ones its per-run training draws, whatever its company. (The
  alternative, a dedicated dropout generator in both paths, was not needed: the per-run
  sequence is fixed by the seed alone.)
- its batch statistics (a cnn's batch norms normalise each run's batch by its own statistics)
  and running statistics (updated in training, used in validation and evaluation), and its
  input normalisation (an image set's channel statistics, per run);
- its model selection (the best validation epoch by the same rule as the per-run path's
  checkpoint callback) and its failure: a run whose loss becomes non-finite fails alone (its
  slice stops counting; the other runs' numbers do not depend on it);
- its run directory: ``config.yaml``, ``data.json``, ``history.csv``, ``predictions_test.csv``,
  the plots, ``checkpoints/best.ckpt`` and ``last.ckpt``, and ``metrics.json`` (last), written
  by the same writers with the same keys; evaluation uses the same task and metric code.

Equal numbers: on the CPU every run's history, selected epoch, metrics and predictions equal the
per-run path's bit for bit (``tests/training/test_grouped.py``, and on images
``tests/training/test_grouped_cnn.py``; ensembles included), at the one intra-op thread both
paths train the mlp and the cnn on (:func:`~emdloss.training._context.use_threads`). That
needs the backward of the stacked linear layer to form its weight gradient as
``grad^T @ input`` (as ``F.linear``'s backward does), batches of
fewer than 16 rows (a split's last batch, where BLAS takes other kernels) to run each run's
product alone, heads other
than a linear layer with several outputs (``l2``'s one output, whose one-column product takes
another BLAS path, and CORAL's layer) to run each run's own head module on its slice of the
features, and the cnn's layers to be each run's own calls (see
:mod:`emdloss.training._stacked`). The grouped convolution of the accelerators sums in another
order: equal up to float32 rounding after a step, which training amplifies (measured on the
CPU: 2e-7 relative after an epoch, 1e-5 after three, and on one slice a moved decision). Mirror
test-time augmentation (``tta``) averages each validation image with its mirror, as the per-run
path's validation does. The checkpoints hold the model's ``state_dict``,
``epoch`` and the history that :func:`emdloss.training.evaluate` reads; they carry no Lightning
loop state, so a run of a group that was interrupted is trained again from the start rather
than resumed.

Each run's loss is one call on its slice (R calls a step). Batching the runs of one loss kind
into one call would change the numbers in the last bit (cross-entropy's mean over a batch
against a per-item loss averaged per run: 1343 of 2400 run-batches differed, R = 12, B = 64),
and the stateful losses (the recipe's learned distance and warm-up) do not batch; the calls
are a small part of a step (an eighth of a tabular group's fit under cProfile, which inflates
Python calls; less next to a cnn), so they stay per run.

What is not vectorised (:func:`why_not_grouped` says why, and compare trains those runs on the
per-run path): networks other than the plain ``mlp`` (dropout allowed) and the ``cnn``
(an mlp's batch norm included; the torchvision backbones), the authors' extra feature pass,
precisions other than ``32-true``, several devices or nodes, and a resume. On a GPU each run's
masks come from its own generator seeded alike, yet not the per-run path's: there its dropout
is the fused kernel (``native_dropout``), which draws otherwise.
"""

from __future__ import annotations

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
from emdloss.training._stacked import StackedNet, body_reason
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
    >>> why_not_grouped(TrainConfig(dataset="retinamnist", model="cnn", loss="ce"))
    >>> why_not_grouped(TrainConfig(dataset="lev", model="resnet18", loss="ce"))
    'model resnet18 (only the mlp and the cnn are vectorised)'
    """
    model = config.model or "the data's default"
    if config.model not in (None, "mlp", "cnn"):
        return f"model {model} (only the mlp and the cnn are vectorised)"
    if config.model_options.get("batchnorm"):
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
    #: The per-run path's training sampler (a shuffle, or vote_weights' weighted draws).
    sampler: Any = None


def _split_tensors(
    task: Any, batch: Sequence[Tensor], device: torch.device
) -> tuple[Tensor, Tensor, Tensor | None]:
    """A whole split as the data loader collates it (:func:`_collated`) and the task unpacks
    it: inputs, targets (class indices, or whatever the task's ``_unpack`` makes of them) and
    distributions."""
    x, y, dist = task._unpack([part.to(device) for part in batch])
    return x, y, dist


def _collated(split: Any) -> list[Tensor]:
    from torch.utils.data import default_collate

    collated: list[Tensor] = default_collate([split[i] for i in range(len(split))])
    return collated


#: What :func:`emdloss.training._build.load_data` reads of a config besides the options that a
#: group shares (:func:`group_key`): the runs of a group with equal values load equal data.
_DATA_VARYING = ("seed", "fold")


def _shape(run: _Run) -> tuple[Any, ...]:
    x, _, dist = run.tensors["train"]
    sizes = tuple(len(run.tensors[part][1]) for part in ("train", "val", "test"))
    return sizes, tuple(x.shape[1:]), dist is not None, run.dataset.num_classes


def _device(config: TrainConfig) -> torch.device:
    if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _prepare(config: TrainConfig, device: torch.device, loaded: dict[Any, Any]) -> _Run:
    """Exactly the per-run path's set-up: seed, data, threads, task, run directory.

    ``loaded`` holds the data sets (and their collated splits) that earlier runs of the group
    loaded: the runs of one seed and fold (the losses of a comparison) read their data once
    (issue 20: the loads were a sixth of a tabular group's time). Loading the data draws
    nothing from the global random state, so the run's initial weights are the same.
    """
    import lightning.pytorch as pl

    from emdloss.training._build import build_task, default_model, load_data, make_datamodule
    from emdloss.training._context import announce_data, describe_data, use_threads
    from emdloss.training._train import _prepare_run_dir

    config, run_dir, _ = _prepare_run_dir(config)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    key = tuple(repr(getattr(config, name)) for name in _DATA_VARYING)
    if key not in loaded:
        data = load_data(config)
        loaded[key] = (data, {p: _collated(getattr(data, p)) for p in ("train", "val", "test")})
    dataset, collated = loaded[key]
    threads = use_threads(config, config.model or default_model(dataset))
    task = build_task(config, dataset)
    sampler = make_datamodule(config, dataset).train_dataloader().sampler
    description = describe_data(config, dataset)
    announce_data(description, verbose=config.progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / rundir.CONFIG_FILE)
    rundir.write_data_record(run_dir, dataset, description=description)
    run = _Run(config, run_dir, dataset, task, threads, description, sampler=sampler)
    task.to(device)
    for part in ("train", "val", "test"):
        run.tensors[part] = _split_tensors(task, collated[part], device)
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
            # Runs are loaded, trained and finished in parts of at most GROUP_BYTES of data (as
            # _fit stacks it: each run's copy counts), so that a long suite of image runs does
            # not hold every run's splits at once (a run's numbers do not depend on the other
            # runs of its part); the data loaded for a part is let go with it.
            runs: list[tuple[int, _Run]] = []
            loaded: dict[Any, Any] = {}
            held = 0
            for i, config in enumerate(configs):
                try:
                    run = _prepare(config, device, loaded)
                    _check_vectorisable(run.task)
                except Exception as error:
                    results[i] = error
                    continue
                runs.append((i, run))
                held += _data_bytes(run)
                if held >= GROUP_BYTES:
                    _train_part(runs, device, results)
                    runs, held = [], 0
                    loaded.clear()
            _train_part(runs, device, results)
    return [r if r is not None else RuntimeError("not trained") for r in results]


#: The most bytes of data (every split of every run) a part of a group holds at once; a
#: group with more trains in parts (the runs of RetinaMNIST at 28 px take 15 MB each).
GROUP_BYTES = 1 << 30


def _data_bytes(run: _Run) -> int:
    return sum(
        t.numel() * t.element_size() for part in run.tensors.values() for t in part if t is not None
    )


def _train_part(
    runs: list[tuple[int, _Run]],
    device: torch.device,
    results: list[rundir.RunResult | BaseException | None],
) -> None:
    """Train the prepared runs (those of one split shape together), finish each, free its data."""
    by_shape: dict[tuple[Any, ...], list[tuple[int, _Run]]] = {}
    for i, run in runs:
        by_shape.setdefault(_shape(run), []).append((i, run))
    for same_shape in by_shape.values():
        for members in _stack_parts(same_shape, device):
            group = [run for _, run in members]
            try:
                _fit(group, device)
            except Exception as error:  # of the group as a whole: each run reports it
                for run in group:
                    run.error = run.error or error
            for i, run in members:
                results[i] = run.error if run.error is not None else _finished(run)
                run.tensors.clear()


#: The most bytes one stacked parameter (one layer's weights of every network of a part) may
#: take on the CPU. Above glibc's largest mmap threshold (32 MiB on 64-bit) every step's
#: gradient and optimiser temporaries of that size are fresh mappings, and their page faults
#: made each network's step on Movie's 1,869-input layer a third slower (20 networks of 1.9 MB
#: each against 12; docs/benchmarks.md). An accelerator's caching allocator has no such cost.
STACK_BYTES = 24 << 20


def _stack_parts(
    runs: list[tuple[int, _Run]], device: torch.device
) -> list[list[tuple[int, _Run]]]:
    """``runs`` cut, in order, into parts whose largest stacked parameter stays within
    :data:`STACK_BYTES` on the CPU (at least one run a part; an ensemble's networks stay
    together); elsewhere one part."""
    if device.type != "cpu":
        return [runs]
    parts: list[list[tuple[int, _Run]]] = []
    held = 0
    for item in runs:
        members = item[1].task.members
        largest = max((p.numel() * p.element_size() for p in members[0].parameters()), default=0)
        size = len(members) * largest
        if not parts or held + size > STACK_BYTES:
            parts.append([])
            held = 0
        parts[-1].append(item)
        held += size
    return parts


def _finished(run: _Run) -> rundir.RunResult | BaseException:
    try:
        return _finish(run)
    except Exception as error:  # this run's files (a full disk, ...): the others go on
        return error


def _check_vectorisable(task: Any) -> None:
    for member in task.members:
        reason = body_reason(member)
        if reason is not None:
            raise ValueError(f"train_group cannot stack the model: {reason}")
    trained = [p for p in task.parameters() if p.requires_grad]
    if len(trained) != len(list(task.model.parameters())):
        raise ValueError(f"train_group: loss {task.criterion.name} has trainable parameters")


def _conv_mode(device: torch.device) -> str:
    """How the stacked cnn runs its convolutions: each run's own on the CPU (bit for bit the
    per-run path's; one grouped convolution was no faster there), one grouped convolution for
    all runs elsewhere (see :mod:`emdloss.training._stacked`)."""
    return "loop" if device.type == "cpu" else "grouped"


# ---------------------------------------------------------------------------- training
def _fit(runs: list[_Run], device: torch.device) -> None:

    config = runs[0].config
    net = StackedNet([run.task for run in runs], device, _conv_mode(device))
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
        order = torch.stack([_epoch_order(run, epoch) for run in runs]).to(device)
        generators = net.run_generators([_dropout_generator(run, epoch, device) for run in runs])
        # torchmetrics' MeanMetric, run by run: sum of value * weight, sum of weights (float32).
        loss_sum = torch.zeros(size, device=device)
        weight_sum = torch.zeros(size, device=device)
        unit = _train_loss_weights(runs)
        for step, begin in enumerate(range(0, n, batch)):
            index = order[:, begin : begin + batch]
            xb = net.slot_inputs(x_train[x_rows, index])
            yb = y_train[rows, index]
            db = None if d_train is None else d_train[rows, index]
            features = net.features(xb, training=True, generators=generators)
            outputs = net.run_outputs(features)
            # A loss that learns from features has one network per run (no ensemble): slot r.
            per_run = features.unbind(0) if needs_features else None
            losses: list[Tensor] = []
            shown: list[Tensor] = []
            for r, run in enumerate(runs):
                crit = run.task.criterion
                loss = report = zero
                if run.error is None:
                    try:
                        # The task's own sum over an ensemble's members, and its mean to report.
                        loss, report = run.task._loss(
                            outputs[r],
                            yb[r],
                            None if db is None else db[r],
                            per_run[r] if per_run is not None and crit.needs_features else None,
                        )
                    except Exception as error:  # this run's loss fails it, not the group
                        run.error, loss, report = error, zero, zero
                    if not bool(torch.isfinite(loss.detach())):
                        # As the per-run path: this run fails here; the others go on.
                        run.error = FloatingPointError(
                            f"training loss is {float(loss.detach())} at epoch {epoch}, batch {step}; "
                            f"lower the learning rate (lr={run.task.lr_at(epoch):g})"
                        )
                        loss = report = zero
                losses.append(loss)
                shown.append(report.detach())
            stacked = torch.stack(losses)
            if not stacked.requires_grad:  # every run of the group has failed
                return
            optimizer.zero_grad(set_to_none=True)
            stacked.sum().backward()
            optimizer.step()
            weight = torch.where(unit, 1.0, float(xb.shape[1])).to(device)
            # MeanMetric casts to its float32 state first (a peer loss may be float64).
            loss_sum += torch.stack(shown).to(loss_sum.dtype) * weight
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


def _epoch_order(run: _Run, epoch: int) -> Tensor:
    """The training items of ``epoch`` in the order the run's own sampler draws them."""
    run.sampler.set_epoch(epoch)
    return torch.tensor(list(run.sampler), dtype=torch.long)


def _dropout_generator(run: _Run, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of the run's dropout masks in ``epoch``: seeded as the per-run path seeds
    the global generator when the epoch starts (see the module's docstring)."""
    from emdloss.training._sampling import global_epoch_seed

    generator = torch.Generator(device=device)
    generator.manual_seed(global_epoch_seed(run.task.seed, epoch))
    return generator


def _train_loss_weights(runs: list[_Run]) -> Tensor:
    # MeanMetric(nan_strategy="disable") weighs every update by one (torchmetrics ignores the
    # weight then); the fallback "warn" weighs by the batch size. As the task's metric does.
    return torch.tensor(
        [getattr(run.task.train_loss_mean, "nan_strategy", "warn") == "disable" for run in runs]
    )


def _validate(runs: list[_Run], net: StackedNet, epoch: int, batch: int) -> None:
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
            xb = net.slot_inputs(x_val[:, begin : begin + batch])
            outputs = net.run_outputs(net.features(xb))
            mirrored = _mirrored_outputs(runs, net, xb)
            for r, run in enumerate(runs):
                if run.error is not None:
                    continue
                _, y, dist = run.tensors["val"]
                yb = y[begin : begin + batch]
                db = None if dist is None else dist[begin : begin + batch]
                task = run.task
                probs = task.probabilities(outputs[r], None if mirrored is None else mirrored[r])
                preds = task.decode_rule(probs, task.monitor_rule)
                _metric_of(run).update(probs, yb, preds)
                if task.distribution and db is not None:  # distribution targets' measures
                    task._distribution_metric("val").update(probs, db)
                loss = task._loss(outputs[r], yb, db, None)[1].detach().cpu()
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


def _mirrored_outputs(runs: list[_Run], net: StackedNet, x: Tensor) -> list[Tensor] | None:
    """Every run's outputs for the horizontal mirrors of images ``x (R, B, C, H, W)`` (one
    row per slot) when the runs average them in (``tta``, shared by a group), else ``None``."""
    if not runs[0].task.tta or x.ndim != 5:
        return None
    return net.run_outputs(net.features(torch.flip(x, dims=[-1])))


def _metric_of(run: _Run) -> Any:
    return run.task.val_metrics[run.task.monitor_rule]


def _rule_dict(run: _Run) -> nn.ModuleDict:
    return nn.ModuleDict({run.task.monitor_rule: _metric_of(run)})


def _select(run: _Run, net: StackedNet, r: int, epoch: int) -> None:
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
    run: _Run, net: StackedNet | None, r: int, optimizer: torch.optim.Optimizer | None
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
