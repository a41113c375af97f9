"""The stacked networks of the grouped engine against each run's own module.

A :class:`~emdloss.training._stacked.StackedNet` of R cnns must compute, for every run, what the
run's own ``OrdinalModel`` computes: features and outputs, gradients, batch-norm running
statistics in training mode, and the running statistics' use in evaluation mode. Mode
``"loop"`` (the CPU's) exactly; mode ``"grouped"`` (one grouped convolution for all runs) up to
float32 rounding.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from emdloss.models import build_model
from emdloss.training._stacked import StackedNet, body_reason

# An odd batch of a few rows (as the last batch of an epoch can be).
RUNS, BATCH, SHAPE = 3, 5, (3, 12, 12)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # The engine trains the mlp and the cnn on one intra-op thread (use_threads), where the
    # equalities below hold bit for bit; on two, BLAS splits a batched product otherwise than
    # each run's own (off in the last bit), so these tests must not inherit another test's
    # thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tasks(models: list[nn.Module], normalise: bool) -> list[Any]:
    tasks = []
    for r, model in enumerate(models):
        mean = torch.tensor([0.1 * r, 0.2, 0.3]) if normalise else torch.zeros(0)
        std = torch.tensor([0.5, 0.25 + 0.1 * r, 1.0]) if normalise else torch.ones(0)
        tasks.append(SimpleNamespace(model=model, input_mean=mean, input_std=std))
    return tasks


def _own_outputs(task: Any, x: torch.Tensor) -> torch.Tensor:
    """What the task computes (OrdinalTask._normalise, then the model)."""
    if task.input_mean.numel():
        x = (x - task.input_mean.view(1, -1, 1, 1)) / task.input_std.view(1, -1, 1, 1)
    out: torch.Tensor = task.model(x)
    return out


@pytest.mark.parametrize(("mode", "exact"), [("loop", True), ("grouped", False)])
def test_a_stacked_cnn_computes_each_run_s_own_cnn(mode: str, exact: bool) -> None:
    models = []
    for r in range(RUNS):
        torch.manual_seed(r)
        models.append(build_model("cnn", num_outputs=4, input_shape=SHAPE, width=4))
    tasks = _tasks(models, normalise=True)
    own = [copy.deepcopy(task) for task in tasks]
    net = StackedNet(tasks, torch.device("cpu"), mode)
    x = torch.rand(RUNS, BATCH, *SHAPE)

    def check(a: torch.Tensor, b: torch.Tensor) -> None:
        if exact:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    for _ in range(2):  # training mode: batch statistics, running statistics updated
        outputs = net.outputs(net.features(x, training=True))
        sum(o.square().mean() for o in outputs).backward()  # type: ignore[union-attr]
        expected = [_own_outputs(task, x[r]) for r, task in enumerate(own)]
        sum(o.square().mean() for o in expected).backward()  # type: ignore[union-attr]
        for a, b in zip(outputs, expected, strict=True):
            check(a, b)
    stacked = dict(zip([n for n, _, _ in net._slots(0)], net.parameters(), strict=False))
    assert len(stacked) == 11  # three convolutions, three batch norms (weight, bias), the head
    for r, task in enumerate(own):
        for (_, param, row), (name, mine) in zip(
            net._slots(r), task.model.named_parameters(), strict=True
        ):
            assert param.grad is not None and mine.grad is not None, name
            check(param.grad[row], mine.grad)
        copied = copy.deepcopy(models[r])
        net.copy_into(r, copied)
        for (key, a), b in zip(copied.state_dict().items(), task.model.state_dict().values(), strict=True):  # fmt: skip
            if key.endswith("num_batches_tracked"):
                assert int(a) == int(b) == 2
            else:
                check(a, b)
    # Evaluation mode: the running statistics.
    with torch.no_grad():
        outputs = net.outputs(net.features(x))
        for r, task in enumerate(own):
            task.model.eval()
            check(outputs[r], _own_outputs(task, x[r]))


def test_what_cannot_be_stacked_says_why() -> None:
    assert body_reason(build_model("cnn", num_outputs=3, input_shape=SHAPE)) is None
    assert body_reason(build_model("mlp", num_outputs=3, input_shape=(5,))) is None
    assert body_reason(build_model("cnn", num_outputs=3, input_shape=SHAPE, dropout=0.1)) is None
    assert body_reason(build_model("mlp", num_outputs=3, input_shape=(5,), dropout=0.1)) is None
    # Another kind of dropout draws other masks (whole channels, or alpha dropout's).
    odd = build_model("cnn", num_outputs=3, input_shape=SHAPE)
    assert isinstance(odd.body, nn.Sequential)
    odd.body.append(nn.Dropout1d(0.1))
    assert "Flatten, Dropout1d" in str(body_reason(odd))
    batchnorm = build_model("mlp", num_outputs=3, input_shape=(5,), batchnorm=True)
    assert "not a plain mlp" in str(body_reason(batchnorm))
    alpha = build_model("mlp", num_outputs=3, input_shape=(5,))
    assert isinstance(alpha.body, nn.Sequential)
    alpha.body.append(nn.AlphaDropout(0.1))
    assert "not a plain mlp" in str(body_reason(alpha))
    with pytest.raises(ValueError, match="cannot stack"):
        StackedNet([SimpleNamespace(model=odd)], torch.device("cpu"))


@pytest.mark.parametrize("rows", [5, 64])
@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [
        ("mlp", (7,), {"hidden_sizes": (32, 16), "dropout": 0.5}),
        ("cnn", SHAPE, {"width": 4, "dropout": 0.3}),
    ],
)
def test_stacked_dropout_draws_each_run_s_own_masks(
    name: str, shape: tuple[int, ...], options: dict[str, Any], rows: int
) -> None:
    # Run r's own model in training mode draws its masks from the global generator; the stacked
    # net draws run r's from generators[r]. Seeded alike, every run's outputs and gradients
    # are its own model's, bit for bit, step after step (the generators move on as the global
    # one does), and a network without generators in training is an error, not a silent
    # network without dropout.
    models = []
    for r in range(RUNS):
        torch.manual_seed(r)
        models.append(build_model(name, num_outputs=4, input_shape=shape, **options))
    tasks = _tasks(models, normalise=False)
    own = [copy.deepcopy(task) for task in tasks]
    net = StackedNet(tasks, torch.device("cpu"), "loop")
    x = torch.rand(RUNS, rows, *shape)
    seeds = [11 + 7 * r for r in range(RUNS)]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    states = [torch.Generator().manual_seed(seed).get_state() for seed in seeds]
    for _ in range(2):
        outputs = net.outputs(net.features(x, training=True, generators=generators))
        sum(o.square().mean() for o in outputs).backward()  # type: ignore[union-attr]
        for r, task in enumerate(own):
            torch.set_rng_state(states[r])
            expected = _own_outputs(task, x[r])
            expected.square().mean().backward()
            states[r] = torch.get_rng_state()
            assert torch.equal(outputs[r], expected)
            assert torch.equal(generators[r].get_state(), states[r])
    for r, task in enumerate(own):
        for (_, param, row), (key, mine) in zip(
            net._slots(r), task.model.named_parameters(), strict=True
        ):
            assert param.grad is not None and mine.grad is not None, key
            assert torch.equal(param.grad[row], mine.grad), key
    with pytest.raises(ValueError, match="one generator per run"):
        net.features(x, training=True)
    assert torch.equal(net.features(x), net.features(x))  # evaluation: no masks


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 15, 16, 64])
@pytest.mark.parametrize(("width_in", "width_out"), [(4, 32), (11, 32), (32, 32), (32, 5)])
def test_stacked_linear_is_each_run_s_f_linear_bit_for_bit(
    rows: int, width_in: int, width_out: int
) -> None:
    # A split's last batch can have a few rows, where the CPU's BLAS takes other kernels than
    # for a batched product: the stacked layer must still equal each run's own F.linear, forward
    # and backward, or a grouped run drifts from its per-run twin (it did with 1-3 rows).
    from emdloss.training._stacked import stacked_linear

    gen = torch.Generator().manual_seed(rows * 100 + width_in)
    x = torch.randn(3, rows, width_in, generator=gen)
    weight = torch.randn(3, width_out, width_in, generator=gen, requires_grad=True)
    bias = torch.randn(3, width_out, generator=gen, requires_grad=True)
    grad = torch.randn(3, rows, width_out, generator=gen)
    out = stacked_linear(x, weight, bias)
    out.backward(grad)
    for r in range(3):
        w = weight[r].detach().clone().requires_grad_(True)
        b = bias[r].detach().clone().requires_grad_(True)
        ref = torch.nn.functional.linear(x[r].clone(), w, b)
        ref.backward(grad[r])
        assert torch.equal(out[r], ref)
        assert weight.grad is not None and bias.grad is not None and w.grad is not None
        assert torch.equal(weight.grad[r], w.grad)
        assert torch.equal(bias.grad[r], b.grad)
