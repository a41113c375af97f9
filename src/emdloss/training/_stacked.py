"""The stacked networks of the grouped engine (:mod:`emdloss.training.grouped`).

R networks of one shape become one :class:`StackedNet`: every parameter of theirs is one
``(R, ...)`` tensor (one leaf for the optimiser), and inputs and features carry the network
(a slot) as their first dimension (``(R, B, ...)``). A run is one slot, or K consecutive slots
for an ensemble of K (:attr:`StackedNet.runs`). Each run's values are its own model's, copied in at the
start (the model built under the run's seed) and copied back out (:meth:`StackedNet.copy_into`)
for selection and checkpoints. Bodies:

- :class:`MlpBody`, the plain ``mlp`` (``Flatten``, then ``Linear``-``ReLU`` pairs, each
  followed by a ``Dropout`` or not): one batched product per layer for all runs, with a
  backward that forms each run's weight gradient as ``F.linear``'s backward does (bit for bit
  on the CPU);
- :class:`CnnBody`, the ``cnn`` of :mod:`emdloss.models` (conv-BN-ReLU stages, max-pools, a
  global average pool, a ``Dropout`` or not). Batch norm keeps each run's batch statistics and
  running statistics (``(R, C)`` buffers, updated in training mode and used in evaluation mode,
  as each run's own ``BatchNorm2d``). Two ways to run the convolutions, one result up to float32
  rounding: ``"loop"`` runs each run's convolutions on its slice with the very calls of its own
  modules (bit for bit the per-run path's numbers; the CPU's choice, where one grouped
  convolution was no faster: 24 against 22 ms per run and step, 8 runs, batch 64, 28 px, one
  thread), and ``"grouped"`` stacks the runs as channels, ``(B, R*C, H, W)``, and runs one
  convolution with ``groups=R`` and one batch norm over ``R*C`` channels per stage (one kernel
  for all runs: the accelerators' choice).

Heads of one kind and shape are stacked too: behind an mlp, linear heads with several outputs
run as one batched product; the others (``l2``'s one output, whose one-column product takes
another BLAS path, and CORAL's layer), and every head behind a cnn in mode ``"loop"``, run each
run's own head module on its slice of the features (the batched product equals ``F.linear``
bit for bit at the mlp's batch sizes, not at every size: a last batch of a few rows can
differ in the last bit; next to a cnn's convolutions a head costs nothing).
Image inputs are normalised per run with the task's ``input_mean`` and ``input_std``, as
:meth:`emdloss.training.module.OrdinalTask.features` does.

Dropout (:func:`stacked_dropout`) draws slot ``r``'s mask in training from ``generators[r]``
(passed to :meth:`StackedNet.features`; the grouped engine seeds one per run as the per-run
path seeds its global generator, and an ensemble's slots share their run's,
:meth:`StackedNet.run_generators`) with the very call of ATen's dropout on the CPU, one draw
per slot, layer and step, slot by slot and within a slot layer by layer (the order of a
network's own forward, and of an ensemble's members one after another), so each network's
masks are those of its own ``nn.Dropout`` fed by a generator in that state
(``tests/training/test_stacked.py``, ``tests/training/test_grouped.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emdloss.models import members_of

__all__ = [
    "CONV_MODES",
    "CnnBody",
    "MlpBody",
    "StackedNet",
    "body_reason",
    "dropout_noise",
    "stacked_dropout",
]

#: How :class:`CnnBody` runs its convolutions (see the module's docstring).
CONV_MODES = ("loop", "grouped")


def _leaf(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    return torch.stack([t.detach().to(device) for t in tensors]).requires_grad_(True)


def _buffer(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    return torch.stack([t.detach().to(device) for t in tensors]).clone()


def _row(value: Any, row: int) -> Any:
    if isinstance(value, Tensor):
        return value[row].clone() if value.ndim > 0 else value.clone()
    return copy.copy(value)


class Body(Protocol):
    """What :class:`StackedNet` needs of a stacked body."""

    def parameters(self) -> list[Tensor]: ...

    def features(
        self, x: Tensor, training: bool, generators: Sequence[torch.Generator] | None = None
    ) -> Tensor: ...

    def slots(self, r: int) -> list[tuple[str, Tensor, int]]: ...

    def copy_into(self, r: int, body: nn.Module) -> None: ...


# ---------------------------------------------------------------------------- mlp
#: Batches of fewer rows (a split's last batch) run each run's product alone: the CPU's BLAS
#: takes other kernels for a few rows, and only ``F.linear``'s own calls are then bitwise equal.
_SMALL_BATCH = 16


class _StackedLinear(torch.autograd.Function):
    """``x (R, B, in) @ W (R, out, in)^T + b (R, out)`` whose backward forms each run's gradient
    with the products of ``F.linear``'s backward (bitwise equal per run on the CPU)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        if x.shape[1] < _SMALL_BATCH:  # BLAS takes other kernels for a few rows: run by run
            return torch.stack(
                [F.linear(a.clone(), w, b) for a, w, b in zip(x, weight, bias, strict=True)]
            )
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        if x.shape[1] < _SMALL_BATCH:
            grad_x = (
                torch.stack([g.mm(w) for g, w in zip(grad, weight, strict=True)])
                if ctx.needs_input_grad[0]
                else None
            )
            grad_w = torch.stack([g.t().mm(a) for g, a in zip(grad, x, strict=True)])
            return grad_x, grad_w, grad.sum(1)
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """R linear layers at once: ``x (R, B, in)``, ``weight (R, out, in)``, ``bias (R, out)``."""
    out: Tensor = _StackedLinear.apply(x, weight, bias)
    return out


def _dropout_p(module: nn.Module | None) -> float | None:
    """The ``p`` of a plain ``nn.Dropout`` in ``[0, 1)``, else ``None``."""
    if type(module) is not nn.Dropout or not 0.0 <= module.p < 1.0:
        return None
    return float(module.p)


def _mlp_layers(body: nn.Module) -> list[tuple[nn.Linear, float]] | None:
    """The linear layers of a plain mlp body (Flatten, [Linear, ReLU, (Dropout)]...) with the
    dropout probability after each (0: none), else ``None``."""
    if not isinstance(body, nn.Sequential):
        return None
    modules = list(body)
    if not modules or not isinstance(modules[0], nn.Flatten):
        return None
    layers: list[tuple[nn.Linear, float]] = []
    i = 1
    while i < len(modules):
        linear, act = [*modules[i : i + 2], None][:2]
        if not isinstance(linear, nn.Linear) or linear.bias is None or not isinstance(act, nn.ReLU):
            return None
        i += 2
        p = _dropout_p(modules[i]) if i < len(modules) else None
        if p is not None:
            i += 1
        layers.append((linear, p or 0.0))
    return layers or None


def stacked_dropout(h: Tensor, p: float, generators: Sequence[torch.Generator]) -> Tensor:
    """``F.dropout(h[r], p)`` in training mode for every slot ``r``, its mask drawn from
    ``generators[r]``.

    ATen's dropout on the CPU (``_dropout_impl``) draws
    ``noise = empty_like(x).bernoulli_(1 - p)`` from the global generator, divides it by
    ``1 - p`` and returns ``x * noise``; here slot
    ``r``'s noise is drawn by the same call from its own generator (a generator in the state the
    per-run path's global one is in: the same mask), and the division and product are
    elementwise (bit for bit the same on the stack).
    """
    noise = dropout_noise([(tuple(h.shape), p)], generators, h.dtype, h.device)[0]
    return h if noise is None else h * noise


def dropout_noise(
    layers: Sequence[tuple[tuple[int, ...], float]],
    generators: Sequence[torch.Generator],
    dtype: torch.dtype,
    device: torch.device,
) -> list[Tensor | None]:
    """The scaled masks of dropout layers ``(shape (R, ...), p)`` (``None`` where ``p`` is 0),
    as :func:`stacked_dropout` draws them, slot by slot and within a slot layer by layer: the
    order of a network's own forward, so slots that share a generator (an ensemble's members,
    in member order) draw what their run's per-run forward draws."""
    noise = [torch.empty(shape, dtype=dtype, device=device) if p else None for shape, p in layers]
    for r, generator in enumerate(generators):
        for mask, (_, p) in zip(noise, layers, strict=True):
            if mask is not None:
                mask[r].bernoulli_(1 - p, generator=generator)
    for mask, (_, p) in zip(noise, layers, strict=True):
        if mask is not None:
            mask.div_(1 - p)
    return noise


def _mask_generators(
    generators: Sequence[torch.Generator] | None, training: bool, p: float
) -> Sequence[torch.Generator] | None:
    """The generators a layer with dropout ``p`` draws its masks from (``None``: it draws none,
    outside training or with ``p = 0``); a ``ValueError`` when it must draw and has none."""
    if not training or p == 0.0:
        return None
    if generators is None:
        raise ValueError("a stacked body with dropout needs one generator per run in training")
    return generators


class MlpBody:
    """R plain mlp bodies: one ``(R, out, in)`` weight and ``(R, out)`` bias per layer."""

    def __init__(self, bodies: Sequence[nn.Module], device: torch.device) -> None:
        layers = [_mlp_layers(body) for body in bodies]
        if any(found is None for found in layers):
            raise ValueError("MlpBody needs plain mlp bodies (Flatten, Linear, ReLU, Dropout)")
        found = [f for f in layers if f is not None]
        #: The dropout probability after each layer (0: none), shared by the runs.
        self.dropout = [p for _, p in found[0]]
        if any([p for _, p in f] != self.dropout for f in found):
            raise ValueError("MlpBody needs bodies with the same dropout")
        self.layers: list[tuple[Tensor, Tensor]] = [
            (
                _leaf([f[depth][0].weight for f in found], device),
                _leaf([f[depth][0].bias for f in found], device),
            )
            for depth in range(len(found[0]))
        ]

    def parameters(self) -> list[Tensor]:
        return [p for pair in self.layers for p in pair]

    def features(
        self, x: Tensor, training: bool, generators: Sequence[torch.Generator] | None = None
    ) -> Tensor:
        noise = self._noise(x, training, generators)
        h = x.flatten(2)
        for (weight, bias), mask in zip(self.layers, noise, strict=True):
            h = torch.relu(stacked_linear(h, weight, bias))
            if mask is not None:
                h = h * mask
        return h

    def _noise(
        self, x: Tensor, training: bool, generators: Sequence[torch.Generator] | None
    ) -> list[Tensor | None]:
        """Every dropout layer's scaled mask ``(R, B, width)`` (``None``: none there), drawn
        before the forward in its order (:func:`dropout_noise`): a layer-by-layer draw across
        the slots would give an ensemble's members with several dropout layers other masks."""
        if _mask_generators(generators, training, max(self.dropout)) is None:
            return [None] * len(self.layers)
        assert generators is not None
        layers = [
            ((x.shape[0], x.shape[1], weight.shape[1]), p)
            for (weight, _), p in zip(self.layers, self.dropout, strict=True)
        ]
        return dropout_noise(layers, generators, x.dtype, x.device)

    def slots(self, r: int) -> list[tuple[str, Tensor, int]]:
        slots: list[tuple[str, Tensor, int]] = []
        for depth, (weight, bias) in enumerate(self.layers):
            slots += [(f"{depth}.weight", weight, r), (f"{depth}.bias", bias, r)]
        return slots

    def copy_into(self, r: int, body: nn.Module) -> None:
        layers = _mlp_layers(body)
        assert layers is not None
        with torch.no_grad():
            for (weight, bias), (layer, _) in zip(self.layers, layers, strict=True):
                layer.weight.copy_(weight[r])
                layer.bias.copy_(bias[r])


# ---------------------------------------------------------------------------- cnn
@dataclass
class _Stage:
    """One conv-BN-ReLU stage of R runs, and the pooling after it (``None``: none)."""

    conv: nn.Conv2d  # run 0's, for the hyper-parameters (stride, padding, ...)
    norm: nn.BatchNorm2d
    pool: nn.MaxPool2d | None
    weight: Tensor  # (R, out, in, k, k)
    gamma: Tensor  # (R, out)
    beta: Tensor  # (R, out)
    running_mean: Tensor  # (R, out), no gradient
    running_var: Tensor  # (R, out)
    tracked: Tensor  # (R,) int64: num_batches_tracked


def _cnn_dropout(body: nn.Module) -> float:
    """The probability of a ``cnn`` body's last module, a dropout (0: none)."""
    modules = list(body) if isinstance(body, nn.Sequential) else []
    p = _dropout_p(modules[-1]) if modules else None
    return p or 0.0


def _cnn_stages(body: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d | None]]:
    """The stages of a ``cnn`` body: [Conv2d, BatchNorm2d, ReLU, (MaxPool2d)]...,
    AdaptiveAvgPool2d(1), Flatten, (Dropout); a ``ValueError`` saying what does not fit."""
    if not isinstance(body, nn.Sequential):
        raise ValueError("not a Sequential")
    modules = list(body)
    if modules and _dropout_p(modules[-1]) is not None:
        modules = modules[:-1]
    if len(modules) < 2 or not (
        isinstance(modules[-2], nn.AdaptiveAvgPool2d)
        and modules[-2].output_size in (1, (1, 1))
        and isinstance(modules[-1], nn.Flatten)
    ):
        kinds = ", ".join(type(m).__name__ for m in modules[-2:])
        raise ValueError(f"ends in {kinds}, not a global average pool and Flatten")
    stages: list[tuple[nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d | None]] = []
    rest = modules[:-2]
    i = 0
    while i < len(rest):
        conv, norm, act = [*rest[i : i + 3], None, None, None][:3]
        if not (
            isinstance(conv, nn.Conv2d)
            and conv.bias is None
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and isinstance(norm, nn.BatchNorm2d)
            and norm.affine
            and norm.track_running_stats
            and norm.momentum is not None
            and isinstance(act, nn.ReLU)
        ):
            kinds = ", ".join(type(m).__name__ for m in rest[i : i + 3])
            raise ValueError(f"a stage of {kinds}, not Conv2d (no bias), BatchNorm2d, ReLU")
        pool = rest[i + 3] if i + 3 < len(rest) else None
        if isinstance(pool, nn.MaxPool2d):
            stages.append((conv, norm, pool))
            i += 4
        else:
            stages.append((conv, norm, None))
            i += 3
    if not stages:
        raise ValueError("no convolution")
    return stages


class CnnBody:
    """R ``cnn`` bodies (see the module's docstring for ``mode``)."""

    def __init__(self, bodies: Sequence[nn.Module], device: torch.device, mode: str) -> None:
        if mode not in CONV_MODES:
            raise ValueError(f"mode must be one of {CONV_MODES}, got {mode!r}")
        self.mode = mode
        per_run = [_cnn_stages(body) for body in bodies]
        #: The dropout probability after the global pool (0: none), shared by the runs.
        self.dropout = _cnn_dropout(bodies[0])
        if any(_cnn_dropout(body) != self.dropout for body in bodies):
            raise ValueError("CnnBody needs bodies with the same dropout")
        self.stages: list[_Stage] = []
        for depth, (conv, norm, pool) in enumerate(per_run[0]):
            convs = [stages[depth][0] for stages in per_run]
            norms = [stages[depth][1] for stages in per_run]
            self.stages.append(
                _Stage(
                    conv,
                    norm,
                    pool,
                    _leaf([c.weight for c in convs], device),
                    _leaf([n.weight for n in norms], device),
                    _leaf([n.bias for n in norms], device),
                    _buffer([n.running_mean for n in norms if n.running_mean is not None], device),
                    _buffer([n.running_var for n in norms if n.running_var is not None], device),
                    _buffer(
                        [n.num_batches_tracked for n in norms if n.num_batches_tracked is not None],
                        device,
                    ),
                )
            )

    def parameters(self) -> list[Tensor]:
        return [p for s in self.stages for p in (s.weight, s.gamma, s.beta)]

    def features(
        self, x: Tensor, training: bool, generators: Sequence[torch.Generator] | None = None
    ) -> Tensor:
        """``x (R, B, C, H, W)`` to features ``(R, B, F)``; ``training``: batch statistics
        (and running statistics updated) and dropout (run ``r``'s masks from
        ``generators[r]``), else the running statistics."""
        if training:
            for stage in self.stages:
                stage.tracked.add_(1)
        features = self._loop(x, training) if self.mode == "loop" else self._grouped(x, training)
        masks = _mask_generators(generators, training, self.dropout)
        return features if masks is None else stacked_dropout(features, self.dropout, masks)

    def _loop(self, x: Tensor, training: bool) -> Tensor:
        # The calls of each run's own modules, on its slice (unbind: one backward per tensor).
        # The running statistics are rows of the stacked buffers, updated in place.
        slices = [[t.unbind(0) for t in (s.weight, s.gamma, s.beta)] for s in self.stages]
        out = []
        for r, h in enumerate(x.unbind(0)):
            for stage, (weight, gamma, beta) in zip(self.stages, slices, strict=True):
                mean, var = stage.running_mean[r], stage.running_var[r]
                h = self._conv(h, weight[r], stage.conv, 1)
                h = self._norm(h, mean, var, gamma[r], beta[r], stage.norm, training)
                h = self._pool(torch.relu(h), stage.pool)
            out.append(F.adaptive_avg_pool2d(h, 1).flatten(1))
        return torch.stack(out)

    def _grouped(self, x: Tensor, training: bool) -> Tensor:
        runs, batch = x.shape[:2]
        h = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])  # (B, R*C, H, W)
        for stage in self.stages:
            weight = stage.weight.reshape(-1, *stage.weight.shape[2:])  # (R*out, in, k, k)
            h = self._conv(h, weight, stage.conv, runs)
            h = self._norm(
                h,
                stage.running_mean.view(-1),
                stage.running_var.view(-1),
                stage.gamma.reshape(-1),
                stage.beta.reshape(-1),
                stage.norm,
                training,
            )
            h = self._pool(torch.relu(h), stage.pool)
        features = F.adaptive_avg_pool2d(h, 1).reshape(batch, runs, -1)
        return features.transpose(0, 1)

    @staticmethod
    def _conv(h: Tensor, weight: Tensor, conv: nn.Conv2d, groups: int) -> Tensor:
        return F.conv2d(h, weight, None, conv.stride, conv.padding, conv.dilation, groups)

    @staticmethod
    def _norm(
        h: Tensor,
        mean: Tensor,
        var: Tensor,
        gamma: Tensor,
        beta: Tensor,
        norm: nn.BatchNorm2d,
        training: bool,
    ) -> Tensor:
        # BatchNorm2d.forward with a fixed momentum: batch statistics and an in-place update of
        # the running ones in training, the running ones otherwise.
        momentum = float(norm.momentum or 0.0)
        return F.batch_norm(h, mean, var, gamma, beta, training, momentum, norm.eps)

    @staticmethod
    def _pool(h: Tensor, pool: nn.MaxPool2d | None) -> Tensor:
        if pool is None:
            return h
        out: Tensor = F.max_pool2d(
            h, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode
        )
        return out

    def slots(self, r: int) -> list[tuple[str, Tensor, int]]:
        slots: list[tuple[str, Tensor, int]] = []
        for depth, s in enumerate(self.stages):
            slots += [(f"{depth}.conv.weight", s.weight, r), (f"{depth}.norm.weight", s.gamma, r)]
            slots.append((f"{depth}.norm.bias", s.beta, r))
        return slots

    def copy_into(self, r: int, body: nn.Module) -> None:
        with torch.no_grad():
            for stage, (conv, norm, _) in zip(self.stages, _cnn_stages(body), strict=True):
                conv.weight.copy_(stage.weight[r])
                norm.weight.copy_(stage.gamma[r])
                norm.bias.copy_(stage.beta[r])
                for name, stacked in (
                    ("running_mean", stage.running_mean),
                    ("running_var", stage.running_var),
                    ("num_batches_tracked", stage.tracked),
                ):
                    getattr(norm, name).copy_(stacked[r])


def body_reason(model: nn.Module) -> str | None:
    """Why ``model``'s body cannot be stacked (``None``: it can)."""
    body = getattr(model, "body", None)
    if not isinstance(getattr(model, "head", None), nn.Module) or body is None:
        return "not a model with a body and a head"
    name = getattr(model, "name", "")
    if name == "cnn":
        try:
            _cnn_stages(body)
        except ValueError as error:
            return f"a cnn body that does not fit the stacked cnn ({error})"
        return None
    if _mlp_layers(body) is None:
        return "not a plain mlp (Flatten, Linear, ReLU, Dropout) or cnn"
    return None


def _make_body(bodies: Sequence[nn.Module], name: str, device: torch.device, mode: str) -> Body:
    if name == "cnn":
        return CnnBody(bodies, device, mode)
    return MlpBody(bodies, device)


# ---------------------------------------------------------------------------- the whole net
class StackedNet:
    """The stacked parameters of R models: one body, heads grouped by kind and width.

    Parameters
    ----------
    tasks : sequence of OrdinalTask
        The runs' tasks (their models of one shape; :func:`body_reason` is ``None`` for each).
    device : torch.device
    mode : {"loop", "grouped"}
        How a :class:`CnnBody` runs its convolutions.
    """

    def __init__(self, tasks: Sequence[Any], device: torch.device, mode: str = "loop") -> None:
        #: Each run's slots (its networks' rows in the stacked tensors), in member order.
        self.runs: list[list[int]] = []
        models: list[Any] = []  # OrdinalModels (body, head)
        for task in tasks:
            networks = members_of(task.model)
            for network in networks:
                reason = body_reason(network)
                if reason is not None:
                    raise ValueError(f"StackedNet cannot stack this model: {reason}")
            self.runs.append(list(range(len(models), len(models) + len(networks))))
            models += networks
        self.body = _make_body(
            [m.body for m in models], getattr(models[0], "name", ""), device, mode
        )
        counts = [len(slots) for slots in self.runs]
        self.mean, self.std = _normalisation(tasks, counts, device)
        # How often slot_inputs repeats each run's inputs (None: one network a run).
        self._repeats = None if len(models) == len(tasks) else torch.tensor(counts, device=device)
        # A cnn's head costs little next to its convolutions: on the CPU each run's own head
        # (F.linear, bit for bit at every batch size; the batched product equals it at the
        # sizes of the mlp's batches, yet not at every size, e.g. a last batch of a few rows).
        self.batched_heads = not (isinstance(self.body, CnnBody) and self.body.mode == "loop")
        kinds: dict[tuple[Any, ...], list[int]] = {}
        for r, model in enumerate(models):
            head = model.head
            shapes = tuple((n, tuple(p.shape)) for n, p in head.named_parameters())
            kinds.setdefault((type(head).__qualname__, shapes), []).append(r)
        self.heads: list[tuple[list[int], list[str], list[Tensor]]] = []
        for members in kinds.values():
            heads = [models[r].head for r in members]
            names = [n for n, _ in heads[0].named_parameters()]
            params = [_leaf([dict(h.named_parameters())[n] for h in heads], device) for n in names]
            self.heads.append((members, names, params))
        self.modules = [model.head for model in models]
        #: The number of slots (networks), ``R`` in the shapes below.
        self.size = len(models)

    def parameters(self) -> list[Tensor]:
        params = list(self.body.parameters())
        for _, _, stacked in self.heads:
            params += stacked
        return params

    def features(
        self,
        x: Tensor,
        training: bool = False,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """Features ``(R, B, F)`` of inputs ``(R, B, ...)``: the runs' own normalisation of
        images, then the body (batch norm in training or evaluation mode; in training, a body
        with dropout draws run ``r``'s masks from ``generators[r]``)."""
        if self.mean is not None and self.std is not None and x.ndim == 5:
            x = (x - self.mean) / self.std
        return self.body.features(x, training, generators)

    def slot_inputs(self, x: Tensor) -> Tensor:
        """Each run's inputs ``(runs, B, ...)`` repeated for its slots, ``(R, B, ...)``."""
        return x if self._repeats is None else x.repeat_interleave(self._repeats, dim=0)

    def run_generators(self, generators: Sequence[torch.Generator]) -> list[torch.Generator]:
        """Each run's generator once per slot: an ensemble's members draw from their run's
        generator in member order, as its per-run forward does (see :class:`MlpBody`)."""
        return [g for g, slots in zip(generators, self.runs, strict=True) for _ in slots]

    def run_outputs(self, features: Tensor) -> list[Tensor]:
        """Outputs of every run, in run order: ``(B, outputs)``, or ``(B, K, outputs)`` for an
        ensemble of ``K`` (as :class:`emdloss.models.OrdinalEnsemble` stacks them)."""
        out = self.outputs(features)
        return [
            out[slots[0]] if len(slots) == 1 else torch.stack([out[s] for s in slots], dim=1)
            for slots in self.runs
        ]

    def outputs(self, features: Tensor) -> list[Tensor]:
        """Outputs of every slot, in slot order (each (B, outputs))."""
        from torch.func import functional_call

        out: list[Tensor | None] = [None] * self.size
        for members, names, params in self.heads:
            index = torch.tensor(members, device=features.device)
            f = features if len(members) == self.size else features.index_select(0, index)
            linear = isinstance(self.modules[members[0]], nn.Linear)
            batched = linear and names == ["weight", "bias"] and params[0].shape[1] > 1
            if batched and self.batched_heads:
                # unbind: one backward for all slices (indexing would cost R full-size zeros)
                stacked = stacked_linear(f, params[0], params[1])
                for r, o in zip(members, stacked.unbind(0), strict=True):
                    out[r] = o
                continue
            slices = [p.unbind(0) for p in params]
            for j, (r, fr) in enumerate(zip(members, f.unbind(0), strict=True)):
                values = {n: s[j] for n, s in zip(names, slices, strict=True)}
                out[r] = functional_call(self.modules[r], values, (fr,))
        return [o for o in out if o is not None]

    def _slots(self, s: int) -> list[tuple[str, Tensor, int]]:
        """Slot ``s``'s parameters in its network's order: (name, stacked tensor, row)."""
        slots = self.body.slots(s)
        for members, names, params in self.heads:
            if s in members:
                j = members.index(s)
                slots += [(f"head.{n}", p, j) for n, p in zip(names, params, strict=True)]
        return slots

    def copy_into(self, r: int, model: nn.Module) -> None:
        """Write run ``r``'s weights (and batch-norm statistics) into its own model (each
        member of an ensemble)."""
        for s, member in zip(self.runs[r], members_of(model), strict=True):
            body, head = member.body, member.head
            assert isinstance(body, nn.Module) and isinstance(head, nn.Module)
            self.body.copy_into(s, body)
            by_name = dict(head.named_parameters())
            with torch.no_grad():
                for name, stacked, row in self._slots(s):
                    if name.startswith("head."):
                        by_name[name[len("head.") :]].copy_(stacked[row])

    def optimizer_state(self, r: int, optimizer: torch.optim.Optimizer) -> Any:
        """Run ``r``'s slice of the optimiser state, in the layout of a per-run optimiser (an
        ensemble's members one after the other, as its parameters are ordered)."""
        slots = [slot for s in self.runs[r] for slot in self._slots(s)]
        state: dict[int, dict[str, Any]] = {}
        for i, (_, param, row) in enumerate(slots):
            entry = optimizer.state.get(param, {})
            state[i] = {k: _row(v, row) for k, v in entry.items()}
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(slots)))}
            for g in optimizer.param_groups
        ]
        return {"state": state, "param_groups": groups}


def _normalisation(
    tasks: Sequence[Any], slots: Sequence[int], device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """Each slot's per-channel ``input_mean`` and ``input_std`` (its run's, ``slots[r]`` times)
    as ``(R, 1, C, 1, 1)`` (``None``: no run normalises). A run without them gets 0 and 1
    (exact identities)."""
    means, stds = [], []
    for task, count in zip(tasks, slots, strict=True):
        means += [getattr(task, "input_mean", torch.zeros(0))] * count
        stds += [getattr(task, "input_std", torch.ones(0))] * count
    sized = [m for m in means if m.numel()]
    if not sized:
        return None, None
    channels = sized[0].numel()
    mean = [m if m.numel() else torch.zeros(channels) for m in means]
    std = [s if s.numel() else torch.ones(channels) for s in stds]
    shape = (len(means), 1, channels, 1, 1)
    return _buffer(mean, device).view(shape), _buffer(std, device).view(shape)
