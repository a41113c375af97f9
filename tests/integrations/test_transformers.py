"""emdloss.integrations.transformers: the loss under gradient accumulation, metrics, Trainer."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emdloss.functional import emd, squared_emd
from emdloss.integrations.transformers import (
    METRIC_NAMES,
    ordinal_compute_metrics,
    ordinal_loss_func,
)

C = 4


def full_batch_mean(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The oracle: our functional losses (and torch's CE) on the labelled rows, averaged."""
    keep = labels != -100
    x, t = logits[keep], labels[keep]
    if name == "emd2":
        return squared_emd(x, t)
    if name == "w1":
        return emd(x, t, p=1)
    return F.cross_entropy(x, t)


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize("name", ["emd2", "w1", "ce"])
def test_accumulated_gradients_equal_full_batch_gradients(name: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(5, C).double()
    x = torch.randn(11, 5, dtype=torch.float64)
    labels = torch.tensor([0, 3, -100, 1, 2, 2, 3, -100, -100, 0, 1])
    params = list(net.parameters())
    oracle = grads(full_batch_mean(name, net(x), labels), params)

    loss_func = ordinal_loss_func(name, num_classes=C)
    # Two micro-batches with different numbers of labelled rows (5 and 3).
    parts = [slice(0, 6), slice(6, 11)]
    n_items = int((labels != -100).sum())
    accumulated = [torch.zeros_like(p) for p in params]
    naive = [torch.zeros_like(p) for p in params]
    for part in parts:
        scaled = loss_func({"logits": net(x[part])}, labels[part], n_items)
        for acc, g in zip(accumulated, grads(scaled, params), strict=True):
            acc += g
        # What transformers #36331 was about: each micro-batch's mean divided by the steps.
        mean = loss_func((net(x[part]),), labels[part]) / len(parts)
        for acc, g in zip(naive, grads(mean, params), strict=True):
            acc += g
    for got, want in zip(accumulated, oracle, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert not all(torch.allclose(a, b) for a, b in zip(naive, oracle, strict=True))


def test_without_num_items_it_is_the_mean_and_ignores_minus_100() -> None:
    logits = torch.randn(6, C, dtype=torch.float64)
    labels = torch.tensor([0, 1, -100, 3, 2, -100])
    loss_func = ordinal_loss_func("emd2", num_classes=C)
    torch.testing.assert_close(
        loss_func((logits,), labels), full_batch_mean("emd2", logits, labels)
    )
    assert loss_func({"logits": logits[2:3]}, labels[2:3], 4).item() == 0.0


def test_tensor_num_items_and_peer_output_widths() -> None:
    pytest.importorskip("coral_pytorch")
    loss_func = ordinal_loss_func("coral", num_classes=C)
    logits = torch.randn(4, C - 1)
    labels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        loss_func({"logits": logits}, labels, torch.tensor(8)),
        loss_func({"logits": logits}, labels) / 2,
    )


@pytest.mark.parametrize("num_items", [0, -3, 2, torch.tensor(0), torch.tensor(-1.0), math.inf])
def test_num_items_below_the_micro_batch_count_is_refused(num_items: Any) -> None:
    """0 (reachable under DataParallel) gave inf, a negative count a negative loss (issue 21)."""
    loss_func = ordinal_loss_func("emd2", num_classes=C)
    logits = torch.randn(4, C)
    labels = torch.tensor([0, 1, -100, 3])  # 3 labelled rows
    with pytest.raises(ValueError, match=r"num_items_in_batch must count .* at least the 3"):
        loss_func({"logits": logits}, labels, num_items)
    # a count of at least 3 is fine; an all-ignored micro-batch gives 0 whatever the count
    assert torch.isfinite(loss_func({"logits": logits}, labels, 3))
    assert loss_func({"logits": logits[2:3]}, labels[2:3], 0).item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "call", "message"),
    [
        ({"loss": "emd2"}, ("logits5", "labels"), "needs 4 outputs per example, the model gives 5"),
        ({"loss": "emd2"}, ("logits", "labels_bad"), r"class indices in \[0, 3\] or -100, got 7"),
        ({"loss": "emd2"}, ("logits", "labels_soft"), "integer class indices"),
        ({"loss": "emd2"}, ("nologits", "labels"), "has no 'logits'"),
    ],
)
def test_bad_calls_are_named(kwargs: dict, call: tuple, message: str) -> None:
    things: dict[str, Any] = {
        "logits": {"logits": torch.zeros(3, C)},
        "logits5": {"logits": torch.zeros(3, 5)},
        "nologits": {"hidden": torch.zeros(3, C)},
        "labels": torch.tensor([0, 1, 2]),
        "labels_bad": torch.tensor([0, 7, 2]),
        "labels_soft": torch.rand(3),
    }
    loss_func = ordinal_loss_func(num_classes=C, **kwargs)
    with pytest.raises(ValueError, match=message):
        loss_func(things[call[0]], things[call[1]])


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="needs num_classes"):
        ordinal_loss_func("emd2")
    with pytest.raises(ValueError, match="penultimate features"):
        ordinal_loss_func("xemd1", num_classes=C)
    with pytest.raises(ValueError, match="feature_pass='extra' needs the training loader"):
        ordinal_loss_func("xemd1", num_classes=C, feature_pass="extra")
    with pytest.raises(ValueError, match="unknown loss"):
        ordinal_loss_func("hinge", num_classes=C)
    with pytest.raises(ValueError, match="rule must be"):
        ordinal_compute_metrics(C, rule="bayes")


def test_compute_metrics_against_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, C))
    labels = rng.integers(0, C, 50)
    labels[:3] = -100
    out = ordinal_compute_metrics(C, rule="argmax")((logits, labels))
    assert tuple(out) == METRIC_NAMES
    pred, true = logits[3:].argmax(axis=1), labels[3:]
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(true, pred))
    assert out["mae"] == pytest.approx(sk.mean_absolute_error(true, pred))
    assert out["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(true, pred)))
    assert out["qwk"] == pytest.approx(sk.cohen_kappa_score(true, pred, weights="quadratic"))
    assert out["one_off_accuracy"] == pytest.approx(np.mean(np.abs(true - pred) <= 1))
    # The median rule: smallest class whose CDF reaches 1/2.
    probs = torch.softmax(torch.as_tensor(logits[3:]), 1).numpy()
    median = (np.cumsum(probs, axis=1) < 0.5).sum(axis=1)
    got = ordinal_compute_metrics(C)((logits, labels))
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(true, median))


# ------------------------------------------------------------------------------ Trainer
try:
    import transformers
except ImportError:  # the Trainer tests need it; the arithmetic above does not
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="needs transformers")


class _Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Ordinal text: the label is how many of 8 tokens are token 7 (0, 1, 2, 3+)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(8, 50, (n, 8), generator=g)
        counts = torch.randint(0, C, (n,), generator=g)
        for i, k in enumerate(counts.tolist()):
            self.ids[i, torch.randperm(8, generator=g)[:k]] = 7
        self.labels = (self.ids == 7).sum(1).clamp_max(C - 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert(seed: int = 0) -> Any:
    transformers.set_seed(seed)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=C,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


def trainer(tmp_path: Path, model: Any, loss_func: Any, **args: Any) -> Any:
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        **args,
    )
    callbacks = [loss_func.callback()] if hasattr(loss_func, "callback") else None
    return transformers.Trainer(
        model=model,
        args=arguments,
        train_dataset=_Tokens(96, 0),
        eval_dataset=_Tokens(64, 1),
        compute_loss_func=loss_func,
        compute_metrics=ordinal_compute_metrics(C),
        callbacks=callbacks,
    )


@pytest.mark.slow
@needs_transformers
def test_trainer_learns_and_reports_ordinal_metrics(tmp_path: Path) -> None:
    loss_func = ordinal_loss_func("emd2", num_classes=C)
    t = trainer(
        tmp_path,
        tiny_bert(),
        loss_func,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,
        num_train_epochs=8,
        learning_rate=1e-2,
        eval_strategy="no",
    )
    before = t.evaluate()
    t.train()
    after = t.evaluate()
    losses = [h["loss"] for h in t.state.log_history if "loss" in h]
    assert len(losses) == 24  # 96 rows / (16 x 2) = 3 steps per epoch, 8 epochs
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert {f"eval_{k}" for k in METRIC_NAMES} <= set(after)
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_mae"] < before["eval_mae"], (before, after)


@pytest.mark.slow
@needs_transformers
def test_trainer_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    # SGD (Adam's first step hides a scale error): 2 x 8 with accumulation vs 1 x 16.
    def one_step(**args: Any) -> dict[str, torch.Tensor]:
        model = tiny_bert()
        # Unequal labelled counts per micro-batch make a per-micro-batch mean wrong.
        t = trainer(
            tmp_path,
            model,
            ordinal_loss_func("emd2", num_classes=C),
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            lr_scheduler_type="constant",
            **args,
        )
        t.train_dataset.labels[::3] = -100
        t.train()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    start = {k: v.clone() for k, v in tiny_bert().state_dict().items()}
    small = one_step(per_device_train_batch_size=8, gradient_accumulation_steps=2)
    big = one_step(per_device_train_batch_size=16, gradient_accumulation_steps=1)
    moved = sum(float((small[k] - start[k]).abs().sum()) for k in start)
    assert moved > 0
    for k in start:
        torch.testing.assert_close(small[k], big[k], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@needs_transformers
def test_trainer_recipe_schedule_via_callback(tmp_path: Path) -> None:
    loss_func = ordinal_loss_func(
        "xemd1",
        num_classes=C,
        warmup_epochs=1,
        features=lambda out: out.hidden_states[-1][:, 0].relu(),
    )
    model = tiny_bert()
    model.config.output_hidden_states = True
    t = trainer(
        tmp_path,
        model,
        loss_func,
        per_device_train_batch_size=32,
        num_train_epochs=3,
        learning_rate=3e-3,
    )
    recipe = loss_func.criterion.recipe
    initial = recipe.ground.matrix.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the callback is attached: no schedule warning
        t.train()
    assert recipe.current_epoch == 3 and not recipe.in_warmup
    assert not torch.equal(recipe.ground.matrix, initial)  # learned from the features


def test_missing_callback_warns() -> None:
    loss_func = ordinal_loss_func("emd2", num_classes=C, warmup_epochs=2)
    with pytest.warns(UserWarning, match=r"callbacks=\[loss_func.callback\(\)\]"):
        loss_func({"logits": torch.zeros(2, C)}, torch.tensor([0, 1]))
