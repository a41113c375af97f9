"""The grouped engine on images (issue 20): a cnn run trained inside a group equals it alone.

On the CPU the stacked cnn runs each run's convolutions and batch norms with its own module's
calls (:mod:`emdloss.training._stacked`, mode ``"loop"``), so a run of a group equals the per-run
path (:func:`emdloss.training.train`) bit for bit: history, selected epoch, metrics,
predictions, weights and batch-norm statistics. A group that shared initial weights, batch
order, batch statistics or optimiser state between its runs would change every run's numbers
and fail these tests. The accelerators' mode (one grouped convolution for all runs) differs from
the per-run path by float32 rounding; ``test_grouped_convolutions_...`` bounds it on the CPU.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("yaml")
pytest.importorskip("lightning")

from tests.training.test_grouped import _rows, assert_same_run, check_company

from emdloss.training import TrainConfig, rundir, train
from emdloss.training.grouped import train_group, why_not_grouped

pytestmark = pytest.mark.usefixtures("data_dir")  # RetinaMNIST from ../shared/data

# A slice of RetinaMNIST (28 px, its official split; the slices depend on the seed), a narrow
# cnn and few epochs: about a second per run.
BUDGET: dict[str, Any] = {
    "dataset": "retinamnist",
    "model": "cnn",
    "model_options": {"width": 4},
    "epochs": 3,
    "limit_train": 160,
    "limit_val": 64,
    "limit_test": 96,
    "batch_size": 32,
    "lr": 3e-3,
    "plots": False,
    "progress": False,
}


def _config(root: Path, loss: str, seed: int, **extra: Any) -> TrainConfig:
    options = {**BUDGET, **extra}
    return TrainConfig(loss=loss, seed=seed, output=str(root / f"{loss}_{seed}"), **options)


def _check_group(root: Path, runs: Sequence[tuple[str, int]], **extra: Any) -> None:
    for loss, seed in runs:
        train(_config(root / "alone", loss, seed, **extra))
    results = train_group([_config(root / "group", loss, seed, **extra) for loss, seed in runs])
    assert all(isinstance(r, rundir.RunResult) for r in results), results
    for loss, seed in runs:
        name = f"{loss}_{seed}"
        assert_same_run(root / "alone" / name, root / "group" / name)
        networks = int(extra.get("ensemble", 1))
        _assert_same_batch_norm(root / "alone" / name, root / "group" / name, networks)


def _state(run_dir: Path, name: str = rundir.BEST_CHECKPOINT) -> dict[str, torch.Tensor]:
    checkpoint = rundir.load_checkpoint(run_dir / rundir.CHECKPOINT_DIR / name)
    state: dict[str, torch.Tensor] = checkpoint["state_dict"]
    return state


def _assert_same_batch_norm(alone: Path, grouped: Path, networks: int = 1) -> None:
    """The running statistics (and step counts) of every batch norm, best and last state."""
    for name in (rundir.BEST_CHECKPOINT, rundir.LAST_CHECKPOINT):
        a, b = _state(alone, name), _state(grouped, name)
        keys = [k for k in a if "running_" in k or "num_batches_tracked" in k]
        assert len(keys) == 9 * networks, keys  # three batch norms a network
        for key in keys:
            assert torch.equal(a[key], b[key]), (name, key)


def test_a_cnn_group_equals_each_run_alone(tmp_path: Path) -> None:
    # Two seeds of ce (different slices, initial weights, batch orders and batch statistics),
    # and a one-output head (l2).
    _check_group(tmp_path, [("ce", 0), ("ce", 1), ("l2", 1)], epochs=2)


@pytest.mark.slow
def test_every_vectorised_loss_family_equals_its_run_alone_on_images(tmp_path: Path) -> None:
    pytest.importorskip("dlordinal")
    pytest.importorskip("coral_pytorch")
    # The squared EMD, the recipe (learned ground distance, warm-up), threshold heads, soft
    # labels.
    runs = [("emd2", 0), ("xemd1", 0), ("xemd2", 1), ("coral", 0), ("corn", 1), ("sord", 0)]
    _check_group(tmp_path, runs)


def test_mirror_tta_and_an_mlp_on_images_equal_their_runs_alone(tmp_path: Path) -> None:
    # tta averages each validation image with its mirror (model selection sees it); the mlp on
    # images normalises them per run with the data's channel statistics, as the per-run path.
    _check_group(tmp_path / "tta", [("ce", 0), ("emd2", 1)], tta=True, epochs=2)
    mlp = {"model": "mlp", "model_options": {"hidden_sizes": [32, 16]}, "epochs": 2}
    for loss, seed in (("ce", 0), ("emd2", 1)):
        train(_config(tmp_path / "mlp" / "alone", loss, seed, **mlp))
    train_group([_config(tmp_path / "mlp" / "group", loss, s, **mlp) for loss, s in (("ce", 0), ("emd2", 1))])  # fmt: skip
    for name in ("ce_0", "emd2_1"):
        assert_same_run(tmp_path / "mlp" / "alone" / name, tmp_path / "mlp" / "group" / name)


def test_cnn_runs_keep_their_own_state_whatever_their_company(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emdloss.training import grouped

    runs = [("ce", 0), ("emd2", 1), ("ce", 2)]
    train_group([_config(tmp_path / "abc", loss, seed, epochs=2) for loss, seed in runs])
    train_group([_config(tmp_path / "cba", loss, seed, epochs=2) for loss, seed in runs[::-1]])
    train_group([_config(tmp_path / "a", "ce", 2, epochs=2)])
    # A group over its data budget trains in parts (here: one run each), with the same numbers.
    monkeypatch.setattr(grouped, "GROUP_BYTES", 1)
    fit, sizes = grouped._fit, []
    monkeypatch.setattr(grouped, "_fit", lambda group, device: (sizes.append(len(group)), fit(group, device)))  # fmt: skip
    train_group([_config(tmp_path / "parts", loss, seed, epochs=2) for loss, seed in runs])
    assert sizes == [1, 1, 1]
    for loss, seed in runs:
        name = f"{loss}_{seed}"
        for other in ("cba", "parts"):
            assert_same_run(tmp_path / "abc" / name, tmp_path / other / name)
            _assert_same_batch_norm(tmp_path / "abc" / name, tmp_path / other / name)
    assert_same_run(tmp_path / "abc" / "ce_2", tmp_path / "a" / "ce_2")
    _assert_same_batch_norm(tmp_path / "abc" / "ce_2", tmp_path / "a" / "ce_2")
    # Different seeds are different runs: weights and batch-norm statistics differ.
    a, b = _state(tmp_path / "abc" / "ce_0"), _state(tmp_path / "abc" / "ce_2")
    differing = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert len(differing) == len([k for k in a if k.startswith("model.")]) - 3  # all but steps


def _numbers(run_dir: Path) -> dict[str, float]:
    """Every float of metrics.json and history.csv, by a path (wall times left out)."""
    flat: dict[str, float] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}/{key}")
        elif isinstance(value, float):
            flat[path] = value

    metrics = json.loads((run_dir / rundir.METRICS_FILE).read_text(encoding="utf-8"))
    metrics.pop("train_seconds")
    walk(metrics, "metrics")
    rows = csv.DictReader((run_dir / rundir.HISTORY_FILE).open(encoding="utf-8"))
    for i, row in enumerate(rows):
        for key, value in row.items():
            if key != "epoch_seconds":
                flat[f"history/{i}/{key}"] = float(value)
    return flat


def _probabilities(run_dir: Path) -> torch.Tensor:
    rows = list(csv.DictReader((run_dir / rundir.PREDICTIONS_FILE).open(encoding="utf-8")))
    columns = [c for c in rows[0] if c.startswith("prob_")]
    return torch.tensor([[float(row[c]) for c in columns] for row in rows])


# Measured on the CPU (this test's runs, one epoch of 5 steps): losses, RPS and learning
# curves within 1.8e-7 relative, probabilities equal to the 6 decimals of predictions_test.csv
# (1e-6), the same decisions and selected epoch. A grouped convolution sums in another order and
# every step amplifies that: after three epochs 1.1e-5 relative (coral's validation RPS), and
# in another slice (l2, seed 1, 192 training images) one validation decision moved and a
# probability by 1.5e-3. Hence one epoch here, with tolerances about 50x the measured ones.
PROBABILITY_ATOL = 1e-5
CONTINUOUS_RTOL = 1e-5


def test_grouped_convolutions_equal_each_run_alone_up_to_rounding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emdloss.training import grouped

    monkeypatch.setattr(grouped, "_conv_mode", lambda device: "grouped")
    runs = [("ce", 0), ("emd2", 1), ("xemd1", 0), ("coral", 1), ("l2", 0)]
    options = {"epochs": 1}
    for loss, seed in runs:
        train(_config(tmp_path / "alone", loss, seed, **options))
    train_group([_config(tmp_path / "group", loss, seed, **options) for loss, seed in runs])
    for loss, seed in runs:
        alone, group = tmp_path / "alone" / f"{loss}_{seed}", tmp_path / "group" / f"{loss}_{seed}"
        a, b = _numbers(alone), _numbers(group)
        assert a.keys() == b.keys()
        assert _best_epoch(alone) == _best_epoch(group)
        for key, value in a.items():
            if key.rsplit("/", 1)[-1].removeprefix("val_") in DISCRETE:
                assert b[key] == value, (loss, key)  # the same decisions
            else:
                assert b[key] == pytest.approx(value, rel=CONTINUOUS_RTOL, abs=1e-7), (loss, key)
        torch.testing.assert_close(
            _probabilities(group), _probabilities(alone), atol=PROBABILITY_ATOL, rtol=0
        )


#: Metrics of the decisions (counts of items): equal when no decision moved.
DISCRETE = frozenset({"accuracy", "one_off_accuracy", "mae", "rmse", "qwk", "amae", "spearman"})


def _best_epoch(run_dir: Path) -> int:
    content = json.loads((run_dir / rundir.METRICS_FILE).read_text(encoding="utf-8"))
    return int(content["best_epoch"])


def test_what_cannot_be_grouped_on_images_says_why(tmp_path: Path) -> None:
    assert why_not_grouped(_config(tmp_path, "ce", 0)) is None
    dropout = _config(tmp_path, "ce", 0, model_options={"width": 4, "dropout": 0.2})
    assert why_not_grouped(dropout) is None  # test_cnn_dropout_...: each run's own masks
    resnet = _config(tmp_path, "ce", 0, model="resnet18", model_options={})
    assert why_not_grouped(resnet) == "model resnet18 (only the mlp and the cnn are vectorised)"
    with pytest.raises(ValueError, match="resnet18"):
        train_group([resnet])


def test_cnn_dropout_runs_equal_their_runs_alone_whatever_their_company(tmp_path: Path) -> None:
    # The cnn's dropout before its head: each run's masks are those its per-run training draws
    # (the global generator, reseeded from (seed, epoch) at every epoch start). 170 training
    # images in batches of 32 end each epoch in a batch of 10. The recipe (xemd1) learns its
    # distance from the features after the dropout.
    dropout = {"model_options": {"width": 4, "dropout": 0.5}, "limit_train": 170, "epochs": 2}
    runs = [("ce", 0), ("emd2", 1), ("xemd1", 0)]
    _check_group(tmp_path, runs, **dropout)
    check_company(tmp_path, _config, runs, ("emd2", 1), _same_run_and_batch_norm, **dropout)
    # Vote histograms (a distribution target per image, which ce and emd2 train on), batches
    # of 16 and a last one of 2 images (34 training images).
    votes = {**_vote_options(tmp_path), "model_options": {"width": 4, "dropout": 0.5}}
    _check_group(tmp_path / "votes", [("ce", 0), ("emd2", 1)], **votes)


def test_cnn_ensembles_with_dropout_and_tta_equal_their_runs_alone(tmp_path: Path) -> None:
    # An ensemble of two cnns a run: each member's own batch statistics and running
    # statistics, its dropout mask drawn from the run's generator in member order, the run's
    # channel normalisation for both, and the mirror average of each member's outputs.
    options = {
        "ensemble": 2,
        "tta": True,
        "model_options": {"width": 4, "dropout": 0.5},
        "limit_train": 170,
        "epochs": 2,
    }
    _check_group(tmp_path, [("ce", 0), ("emd2", 1)], **options)


def _same_run_and_batch_norm(alone: Path, grouped: Path) -> None:
    assert_same_run(alone, grouped)
    _assert_same_batch_norm(alone, grouped)


def _vote_options(root: Path) -> dict[str, Any]:
    """The options of a run on :func:`_vote_images` (written under ``root / "images"``): the
    whole set, 2 epochs, batches of 16."""
    (root / "images").mkdir()
    return {
        "dataset": f"images:{_vote_images(root / 'images')}",
        "data_options": {"count_columns": "votes_", "image_size": 8},
        "limit_train": None,
        "limit_val": None,
        "limit_test": None,
        "batch_size": 16,
        "epochs": 2,
    }


def _vote_images(root: Path) -> Path:
    """A tiny ``images:`` set with vote counts (a distribution target per image), 8 px."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    lines = ["path,votes_1,votes_2,votes_3"]
    for i in range(48):
        votes = torch.randint(0, 5, (3,), generator=generator)
        votes[i % 3] += 3
        pixels = (torch.rand(8, 8, 3, generator=generator) * 255).to(torch.uint8)
        pixels[..., i % 3] = 40 + 80 * (i % 3)  # a colour that goes with the votes
        Image.fromarray(pixels.numpy()).save(root / f"{i}.png")
        lines.append(f"{i}.png," + ",".join(str(int(v)) for v in votes))
    csv_path = root / "votes.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


@pytest.mark.slow
def test_compare_groups_image_sets_with_the_per_run_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emdloss.compare import compare

    (tmp_path / "images").mkdir()
    spec = f"images:{_vote_images(tmp_path / 'images')}"
    data = {"count_columns": "votes_", "image_size": 8}
    small = {"epochs": 2, "batch_size": 16, "model_options": {"width": 4}, "data_options": data}
    retina = {k: BUDGET[k] for k in ("model_options", "limit_train", "limit_val", "limit_test")}
    for name, dataset, options in (("votes", spec, small), ("retina", "retinamnist", retina)):
        kwargs: dict[str, Any] = dict(progress=False, baselines=False, plots="none")
        kwargs["train_options"] = {"epochs": 2, **options}
        compare(dataset, "ce,emd2", 2, tmp_path / name / "per", engine="per-run", **kwargs)
        capsys.readouterr()
        grouped = compare(dataset, "ce,emd2", 2, tmp_path / name / "grp", **kwargs)
        assert "per-run engine" not in capsys.readouterr().err  # the cnn named, grouped
        assert [r.status for r in grouped.records] == ["done"] * 4
        assert _rows(tmp_path / name / "per") == _rows(tmp_path / name / "grp")
        for record in grouped.records:
            assert_same_run(tmp_path / name / "per" / record.spec.relative_dir, record.run_dir)


def test_vote_weighted_draws_on_vote_histograms_equal_their_runs_alone(tmp_path: Path) -> None:
    # vote_weights: each run draws its batches with replacement in proportion to the votes (its
    # own EpochWeightedSampler); a plain shuffle instead would change every number.
    options = {**_vote_options(tmp_path), "vote_weights": True}
    assert why_not_grouped(_config(tmp_path, "ce", 0, **options)) is None
    _check_group(tmp_path, [("ce", 0), ("emd2", 1)], **options)
