"""Training runs through the Python API: run directory, model selection, metrics against
scikit-learn, evaluate/predict, exact resume, atomic checkpoints, two-process DDP.

Named for emdloss.training._train; also covers _evaluate, _predict, _io and _sampling.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")  # the train extra
pytest.importorskip("yaml")
pytest.importorskip("sklearn")  # oracle

import lightning.pytorch as pl
import yaml
from sklearn.metrics import accuracy_score, cohen_kappa_score, mean_absolute_error

from emdloss._atomic import atomic_write
from emdloss.training import TrainConfig, evaluate, predict, train
from emdloss.training._build import load_data
from emdloss.training._io import AtomicCheckpointIO
from emdloss.training._sampling import EpochShuffleSampler, seed_epoch
from emdloss.vocabulary import RULES

FAST = {
    "accelerator": "cpu",
    "progress": False,
    "model_options": {"hidden_sizes": [32], "dropout": 0.2},
    "batch_size": 64,
}
RUN_FILES = (
    "config.yaml",
    "data.json",
    "metrics.json",
    "history.csv",
    "predictions_test.csv",
    "checkpoints/last.ckpt",
    "checkpoints/best.ckpt",
    "learning_curves.png",
    "confusion_matrix.png",
)
METRIC_KEYS = ("accuracy", "one_off_accuracy", "mae", "rmse", "qwk", "rps", "amae", "spearman")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _digest(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def lev_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("lev") / "run"
    config = TrainConfig(dataset="lev", loss="emd2", epochs=4, seed=3, output=str(out), **FAST)
    return train(config)


# ---------------------------------------------------------------------------- config
def test_config_from_flags_yaml_and_errors(tmp_path: Path) -> None:
    config = TrainConfig.from_dict({"batch-size": "8", "tta": "yes", "classes": "a, b ,c"})
    assert (config.batch_size, config.tta, config.classes) == (8, True, ["a", "b", "c"])
    path = config.save(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(path) == config
    assert set(yaml.safe_load(path.read_text())) == set(TrainConfig.field_names())
    with pytest.raises(ValueError, match="unknown option 'epoch'; valid options: dataset, output"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="option epochs=0: expected an integer >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="option lr='fast': expected a number"):
        TrainConfig.from_dict({"lr": "fast"})
    with pytest.raises(ValueError, match="unknown loss 'emd'; valid losses: ce, emd2"):
        TrainConfig(loss="emd")
    with pytest.raises(ValueError, match="unknown model 'resnet9'; valid models: mlp, cnn"):
        TrainConfig(model="resnet9")
    with pytest.raises(ValueError, match="option monitor='f1': expected one of accuracy"):
        TrainConfig(monitor="f1")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        TrainConfig.from_yaml(tmp_path / "list.yaml")
    assert TrainConfig(epochs=2).differences(TrainConfig(epochs=3, seed=1)) == ["epochs", "seed"]


def test_limits_are_stratified_subsets() -> None:
    data = load_data(TrainConfig(dataset="lev", limit_train=50, limit_val=10, limit_test=20))
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 20)
    full = load_data(TrainConfig(dataset="lev"))
    share = np.bincount(full.train.targets, minlength=5) / len(full.train)
    counts = np.bincount(data.train.targets, minlength=5)
    assert np.all(np.abs(counts - 50 * share) <= 1)


# ---------------------------------------------------------------------------- randomness
def test_shuffle_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(range(50), seed=7)
    sampler.set_epoch(3)
    first = list(sampler)
    torch.manual_seed(123)  # the global generator must not matter
    sampler.set_epoch(4)
    other = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first != other
    assert sorted(first) == list(range(50))
    assert list(EpochShuffleSampler(range(50), seed=8)) != list(EpochShuffleSampler(range(50), 7))


def test_seed_epoch_resets_all_generators() -> None:
    seed_epoch(1, 2)
    draws = (torch.rand(2), np.random.rand(2))  # noqa: NPY002 - the global generator on purpose
    seed_epoch(1, 2)
    assert torch.equal(draws[0], torch.rand(2))
    assert np.array_equal(draws[1], np.random.rand(2))  # noqa: NPY002


# ---------------------------------------------------------------------------- atomic files
def test_interrupted_checkpoint_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert io.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left


def test_atomic_write_failure_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    def half(handle: Any) -> None:
        handle.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "m.json", half)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- a run
def test_run_directory_layout(lev_run: Any) -> None:
    run_dir = lev_run.run_dir
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "ground_distance.png").exists()  # emd2 has no matrix
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["epochs"] == 4 and metrics["loss"] == "emd2"
    assert metrics["train_seconds"] > 0 and metrics["best_epoch"] == lev_run.best_epoch
    for split in ("val", "test"):
        assert list(metrics[split]) == list(RULES)
        for rule in RULES:
            assert set(METRIC_KEYS) <= set(metrics[split][rule])
    saved = TrainConfig.from_yaml(run_dir / "config.yaml")
    assert saved == lev_run.config


def test_model_selection_picks_the_best_validation_epoch(lev_run: Any) -> None:
    history = _read_csv(lev_run.run_dir / "history.csv")
    maes = [float(row["val_mae"]) for row in history]
    assert lev_run.best_epoch == 1 + int(np.argmin(maes))  # first of equal bests
    best_row = history[lev_run.best_epoch - 1]
    # The validation metrics reported are those of the best checkpoint, re-evaluated.
    for key in METRIC_KEYS:
        assert lev_run.val["argmax"][key] == pytest.approx(float(best_row[f"val_{key}"]))
    lrs = [float(row["lr"]) for row in history]
    assert lrs == pytest.approx([1e-3 * 0.995**e for e in range(4)])
    last = torch.load(lev_run.run_dir / "checkpoints/last.ckpt", weights_only=False)
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(lrs[-1])


def test_model_selection_skips_the_recipe_warm_up(tmp_path: Path) -> None:
    # Validation MAE that is best during the cross-entropy warm-up must not win: that model is
    # plain CE. Monitoring accuracy with a lr of 0 after warm-up would be flaky; instead check
    # that every warm-up epoch was ineligible whatever its value.
    config = TrainConfig(
        dataset="lev", loss="xemd1", epochs=4, warmup_epochs=2, seed=1, output=str(tmp_path), **FAST
    )
    result = train(config)
    assert result.best_epoch > 2
    history = _read_csv(tmp_path / "history.csv")
    after = [float(row["val_mae"]) for row in history[2:]]
    assert result.best_epoch == 3 + int(np.argmin(after))


def test_test_metrics_agree_with_sklearn_on_the_written_predictions(lev_run: Any) -> None:
    rows = _read_csv(lev_run.run_dir / "predictions_test.csv")
    data = load_data(lev_run.config)
    assert len(rows) == len(data.test)
    y = np.array([int(r["target"]) for r in rows])
    assert np.array_equal(y, data.test.targets)
    names = json.loads((lev_run.run_dir / "data.json").read_text())["class_names"]
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    for rule in RULES:
        pred = np.array([int(r[f"pred_{rule}"]) for r in rows])
        reported = lev_run.test[rule]
        assert reported["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert reported["mae"] == pytest.approx(mean_absolute_error(y, pred))
        qwk = cohen_kappa_score(y, pred, weights="quadratic")
        assert reported["qwk"] == pytest.approx(qwk)
    rps = np.mean(np.sum((np.cumsum(probs, 1) - np.cumsum(np.eye(5)[y], 1)) ** 2, 1) / 4)
    assert lev_run.test["argmax"]["rps"] == pytest.approx(rps, abs=1e-5)
    top2 = np.sort(probs, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5  # the CSV rounds probabilities to 6 digits
    argmax = np.array([int(r["pred_argmax"]) for r in rows])
    assert np.array_equal(argmax[clear], probs.argmax(1)[clear])


def test_train_builds_its_network_once_and_tests_the_best_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 19): train built the task (network, loss) and the data module a second
    time to test the best checkpoint. Now once; the numbers are those of a fresh evaluation,
    the learned ground matrix of xemd1 (loss state) included."""
    import emdloss.training._build as build
    import emdloss.training._train as training

    calls = {"task": 0, "datamodule": 0}

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    task, datamodule = (
        counted("task", build.build_task),
        counted("datamodule", build.make_datamodule),
    )
    for module in (build, training):
        monkeypatch.setattr(module, "build_task", task)
        monkeypatch.setattr(module, "make_datamodule", datamodule)
    config = TrainConfig(
        dataset="lev", loss="xemd1", epochs=3, warmup_epochs=1, seed=2, output=str(tmp_path), **FAST
    )
    result = train(config)
    assert calls == {"task": 1, "datamodule": 1}
    monkeypatch.undo()
    again = evaluate(tmp_path, progress=False)
    for split in ("val", "test"):
        assert again[split] == result.metrics[split]


def test_evaluate_reproduces_the_metrics_and_writes_nothing(lev_run: Any) -> None:
    before = _digest(lev_run.run_dir)
    again = evaluate(lev_run.run_dir, progress=False)
    assert again["best_epoch"] == lev_run.best_epoch
    for split in ("val", "test"):
        for rule in RULES:
            assert again[split][rule] == pytest.approx(lev_run.metrics[split][rule])
    assert _digest(lev_run.run_dir) == before


def _predicts_raw_rows_like_training(run_dir: Path, tmp_path: Path, rows: int) -> None:
    """``predict`` on the first test rows, written raw from skordinal's LEV, equals
    ``predictions_test.csv``."""
    import skordinal.datasets as skd

    bunch = skd.load_lev()
    expected = _read_csv(run_dir / "predictions_test.csv")[:rows]
    raw = tmp_path / "new.csv"
    with raw.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["comment", *bunch.feature_names])  # extra columns are ignored
        for row in expected:
            index = int(row["id"].split()[-1])
            writer.writerow(["x", *[repr(float(v)) for v in bunch.data[index]]])
    out = tmp_path / "pred.csv"
    result = predict(run_dir, [raw], output=out)
    assert len(result) == rows and out.is_file()
    names = json.loads((run_dir / "data.json").read_text())["class_names"]
    for got, want in zip(result, expected, strict=True):
        for name in names:
            assert got[f"prob_{name}"] == pytest.approx(float(want[f"prob_{name}"]), abs=2e-6)
        assert got["pred_median"] == names[int(want["pred_median"])]
    assert _read_csv(out)[0]["id"] == "line 2"


def test_predict_encodes_raw_rows_like_training(lev_run: Any, tmp_path: Path) -> None:
    _predicts_raw_rows_like_training(lev_run.run_dir, tmp_path, 25)


def test_existing_run_needs_resume_or_overwrite(lev_run: Any) -> None:
    config = TrainConfig.from_dict({"resume": False}, base=lev_run.config)
    with pytest.raises(ValueError, match="already holds a run; use resume"):
        train(config)
    changed = TrainConfig.from_dict({"resume": True, "lr": 0.5}, base=lev_run.config)
    with pytest.raises(ValueError, match=r"options differ from the saved run \(lr: 0.001 -> 0.5\)"):
        train(changed)


def test_predict_errors(lev_run: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("in1,in2,in3\n1,2,3\n")
    with pytest.raises(ValueError, match=r"lacks the column.*in4"):
        predict(lev_run.run_dir, [bad])
    bad.write_text("in1,in2,in3,in4\n1,2,oops,4\n")
    with pytest.raises(ValueError, match="line 2: column 'in3' holds 'oops', expected a number"):
        predict(lev_run.run_dir, [bad])
    with pytest.raises(FileNotFoundError, match="input not found"):
        predict(lev_run.run_dir, [tmp_path / "missing.csv"])
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        predict(tmp_path, [bad])


# ---------------------------------------------------------------------------- resume
class _Crash(Exception):
    pass


class _CrashAtEpoch(pl.Callback):
    """Kill the run when epoch ``epoch`` (0-based) starts, after the previous checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Crash


@pytest.mark.slow
@pytest.mark.parametrize("every_seconds", [0.0, None])
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_seconds: float | None
) -> None:
    # The learned ground distance (xemd1, one warm-up epoch) and dropout make this strict:
    # the recipe state, the matrix, the shuffling and the dropout masks must all be restored.
    # 0.0: checkpoints written after every epoch, as by a run whose epochs are longer than the
    # write interval; None: the default interval, so the crash itself writes epoch 1's state.
    from emdloss.training import _checkpoint

    if every_seconds is not None:
        monkeypatch.setattr(_checkpoint, "CHECKPOINT_SECONDS", every_seconds)
    options = dict(dataset="lev", loss="xemd1", warmup_epochs=1, epochs=4, seed=5, **FAST)
    whole = train(TrainConfig(output=str(tmp_path / "whole"), **options))
    with pytest.raises(_Crash):
        train(TrainConfig(output=str(tmp_path / "cut"), **options), callbacks=[_CrashAtEpoch(2)])
    cut = tmp_path / "cut"
    assert not (cut / "metrics.json").exists()
    assert torch.load(cut / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 1
    resumed = train(TrainConfig(output=str(cut), resume=True, **options))
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.metrics["val"] == whole.metrics["val"]
    assert resumed.metrics["test"] == whole.metrics["test"]
    assert (cut / "predictions_test.csv").read_text() == (
        whole.run_dir / "predictions_test.csv"
    ).read_text()
    strip = ("epoch_seconds",)
    rows = [
        [{k: v for k, v in r.items() if k not in strip} for r in _read_csv(d / "history.csv")]
        for d in (whole.run_dir, cut)
    ]
    assert rows[0] == rows[1] and len(rows[0]) == 4
    a = torch.load(whole.run_dir / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(cut / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    matrix = a["criterion.recipe.ground.matrix"]
    assert (cut / "ground_distance.png").is_file()
    assert not torch.equal(matrix, build_prior(5))  # learned, not the prior


def build_prior(num_classes: int) -> torch.Tensor:
    from emdloss.ground import LearnedGroundDistance

    return LearnedGroundDistance(num_classes).matrix.clone()


# ---------------------------------------------------------------------------- DDP
@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    # ddp_fork: the two CPU processes start in a fraction of the time spawn needs.
    config = TrainConfig(
        dataset="lev",
        loss="xemd1",
        warmup_epochs=1,
        epochs=2,
        output=str(tmp_path / "ddp"),
        devices=2,
        strategy="ddp_fork",
        **FAST,
    )
    result = train(config)
    for name in RUN_FILES:
        assert (result.run_dir / name).is_file(), name
    data = load_data(config)
    rows = _read_csv(result.run_dir / "predictions_test.csv")
    assert len(rows) == len(data.test)  # every test sample once (no DDP padding)
    y = np.array([int(r["target"]) for r in rows])
    pred = np.array([int(r["pred_argmax"]) for r in rows])
    assert result.test["argmax"]["mae"] == pytest.approx(mean_absolute_error(y, pred))
    history = _read_csv(result.run_dir / "history.csv")
    assert len(history) == 2 and all(math.isfinite(float(r["val_mae"])) for r in history)
    # Validation metrics were reduced over both processes: the best checkpoint re-evaluated
    # in one process on the whole validation split gives the logged values.
    best = history[result.best_epoch - 1]
    assert result.val["argmax"]["mae"] == pytest.approx(float(best["val_mae"]))


def test_deferred_test_reads_the_test_split_once_and_matches_training(
    lev_run: Any, tmp_path: Path
) -> None:
    """evaluate_test=False (compare's grid runs) leaves the test split unread; run_deferred_test
    then writes exactly what a tested training writes, with the same numbers."""
    from emdloss.training import run_deferred_test

    out = tmp_path / "deferred"
    config = TrainConfig(
        dataset="lev", loss="emd2", epochs=4, seed=3, output=str(out), evaluate_test=False, **FAST
    )
    result = train(config)
    content = json.loads((out / "metrics.json").read_text())
    assert "test" not in content and "val" in content
    assert not (out / "predictions_test.csv").exists()
    assert not (out / "confusion_matrix.png").exists()
    tested = run_deferred_test(out)
    assert {p.name for p in out.iterdir()} >= {"predictions_test.csv", "confusion_matrix.png"}
    for rule in RULES:  # the same run as lev_run except that its test split waited
        assert tested["test"][rule] == pytest.approx(lev_run.metrics["test"][rule])
        assert result.metrics["val"][rule] == pytest.approx(lev_run.metrics["val"][rule])
    assert json.loads((out / "metrics.json").read_text())["test"] == tested["test"]
    assert _read_csv(out / "predictions_test.csv") == _read_csv(
        lev_run.run_dir / "predictions_test.csv"
    )


def test_a_run_on_unstandardised_inputs_predicts_raw_rows_like_training(tmp_path: Path) -> None:
    # standardize=false records the identity (mean 0, scale 1): predict must apply that, not
    # re-standardise new rows.
    options = {"data_options": {"standardize": "false"}, **FAST}
    run = train(TrainConfig(dataset="lev", epochs=2, output=str(tmp_path / "run"), **options))
    table = json.loads((run.run_dir / "data.json").read_text())["table"]
    assert table["feature_mean"] == [0.0] * 4 and table["feature_scale"] == [1.0] * 4
    _predicts_raw_rows_like_training(run.run_dir, tmp_path, 20)
