"""Deep ensembles (``--ensemble K``): K networks trained side by side, probabilities averaged.

The oracles: each member's probabilities computed on its own (the mean is the ensemble's), and a
network trained alone from a member's initial weights on the same batches (a member of the
ensemble must end with exactly its weights: the sum of the members' losses gives each member
its own gradient).
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")

from emdloss.models import OrdinalEnsemble, build_model
from emdloss.training import OrdinalTask, TrainConfig, load_task, train
from emdloss.training.losses import build_loss

FAST = {"accelerator": "cpu", "progress": False, "plots": False, "batch_size": 64}


def _members(k: int, num_outputs: int = 4, seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [
        build_model("mlp", num_outputs=num_outputs, input_shape=(6,), hidden_sizes=[8])
        for _ in range(k)
    ]


def test_ensemble_stacks_its_members_outputs() -> None:
    members = _members(3)
    x = torch.randn(5, 6)
    out = OrdinalEnsemble(members)(x)
    assert out.shape == (5, 3, 4)
    for k, member in enumerate(members):
        torch.testing.assert_close(out[:, k], member(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        OrdinalEnsemble(members[:1])


@pytest.mark.parametrize("loss_name", ["ce", "emd2", "coral", "nima"])
def test_probabilities_are_the_mean_of_the_members(loss_name: str) -> None:
    loss = build_loss(loss_name, 4)
    members = _members(3, num_outputs=loss.num_outputs)
    task = OrdinalTask(OrdinalEnsemble(members), loss, num_classes=4).eval()
    x = torch.randn(7, 6)
    # Each member alone (with the loss's own head where it brings one, as CORAL does).
    alone = [loss.probabilities(member(x)) for member in members]
    want = torch.stack(alone).mean(dim=0)
    got = task.predict_proba(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(7), rtol=0, atol=1e-6)
    if loss_name == "coral":  # the loss's own head on every member, each with its own weights
        heads = [member.head for member in members]
        assert all(type(head).__name__ == "CoralLayer" for head in heads)
        assert len({id(head) for head in heads}) == 3


def test_mirror_averaging_and_the_ensemble_mean_compose() -> None:
    torch.manual_seed(2)
    members = [build_model("cnn", num_outputs=3, input_shape=(3, 8, 8), width=4) for _ in range(2)]
    loss = build_loss("emd2", 3)
    task = OrdinalTask(OrdinalEnsemble(members), loss, num_classes=3, tta=True).eval()
    x = torch.rand(4, 3, 8, 8)
    mirrored = torch.flip(x, dims=[-1])
    per_member = [
        0.5 * (loss.probabilities(m(x)) + loss.probabilities(m(mirrored))) for m in members
    ]
    torch.testing.assert_close(task.predict_proba(x), torch.stack(per_member).mean(dim=0))


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_each_member_learns_as_if_trained_alone(optimizer: str) -> None:
    members = _members(2)
    alone = copy.deepcopy(members[1])
    config = TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=0.01)
    loss = build_loss("emd2", 4)
    ensemble_task = OrdinalTask(OrdinalEnsemble(members), loss, num_classes=4, config=config)
    single_task = OrdinalTask(alone, build_loss("emd2", 4), num_classes=4, config=config)
    tasks = (ensemble_task, single_task)
    optimizers = [task.configure_optimizers() for task in tasks]
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        x = torch.randn(16, 6, generator=generator)
        y = torch.randint(0, 4, (16,), generator=generator)
        for task, opt in zip(tasks, optimizers, strict=True):
            task._log_steps = False
            opt.zero_grad()
            task.training_step((x, y), step).backward()
            opt.step()
    for (name, got), (_, want) in zip(
        members[1].named_parameters(), alone.named_parameters(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)
    # The members started apart and stay apart.
    assert not torch.equal(members[0].head.weight, members[1].head.weight)


def test_training_reports_the_members_mean_loss() -> None:
    loss = build_loss("ce", 4)
    members = _members(3)
    task = OrdinalTask(OrdinalEnsemble(members), loss, num_classes=4)
    x, y = torch.randn(9, 6), torch.randint(0, 4, (9,))
    total, shown = task._loss(task(x), y, None, None)
    each = torch.stack([loss(m(x), y, None, None) for m in members])
    torch.testing.assert_close(total, each.sum())
    torch.testing.assert_close(shown, each.mean())


@pytest.mark.parametrize("options", [{}, {"feature_pass": "extra"}])
def test_a_learned_ground_distance_is_refused(options: dict[str, str]) -> None:
    loss = build_loss("xemd1", 4, **options)
    with pytest.raises(ValueError, match="--ensemble 2 with --loss xemd1: its ground distance"):
        OrdinalTask(OrdinalEnsemble(_members(2)), loss, num_classes=4)


def test_ensemble_option_is_checked() -> None:
    with pytest.raises(ValueError, match=r"ensemble=0: expected an integer >= 1"):
        TrainConfig(ensemble=0)


@pytest.fixture(scope="module")
def lev_ensemble(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("ens") / "run"
    config = TrainConfig(
        dataset="lev",
        loss="emd2",
        epochs=2,
        seed=5,
        ensemble=3,
        output=str(out),
        model_options={"hidden_sizes": [16], "dropout": 0.2},
        **FAST,
    )
    return train(config)


def test_a_trained_ensemble_is_saved_loaded_and_predicts_its_test_rows(lev_ensemble) -> None:  # type: ignore[no-untyped-def]
    from emdloss.training._build import load_data
    from emdloss.training.rundir import read_config

    run_dir = lev_ensemble.run_dir
    task, _ = load_task(run_dir)
    assert isinstance(task.model, OrdinalEnsemble) and len(task.model.members) == 3
    config = read_config(run_dir)
    assert config.ensemble == 3
    assert json.loads((run_dir / "metrics.json").read_text())["ensemble"] == 3
    dataset = load_data(config)
    x = torch.as_tensor(dataset.test.inputs, dtype=torch.float32)
    probs = task.eval().predict_proba(x)
    with (run_dir / "predictions_test.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = json.loads((run_dir / "data.json").read_text())["class_names"]
    written = torch.tensor([[float(row[f"prob_{n}"]) for n in names] for row in rows])
    torch.testing.assert_close(probs, written, rtol=0, atol=2e-6)
    # Three different networks, not one network three times.
    first, second = (m.head.weight for m in list(task.model.members)[:2])
    assert not torch.equal(first, second)


def test_cli_train_says_the_ensemble_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emdloss.cli import main

    argv = ["train", "--dataset", "lev", "--loss", "emd2", "--ensemble", "2", "--epochs", "1"]
    argv += ["--output", str(tmp_path / "run"), "--no-progress", "--limit-train", "64"]
    assert main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("best epoch"))
    assert "(by val_mae), an ensemble of 2 networks, training " in line


def test_cli_ensemble_with_a_learned_ground_distance_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emdloss.cli import main

    argv = ["train", "--dataset", "lev", "--loss", "xemd1", "--ensemble", "2"]
    argv += ["--output", str(tmp_path / "run"), "--no-progress", "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "emdloss train: error: --ensemble 2 with --loss xemd1: its ground distance is learned "
        "from one network's features; train it with --ensemble 1"
    ]


def test_compare_trains_every_run_as_an_ensemble(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import yaml

    from emdloss.compare import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--dataset", "lev", "--losses", "ce,emd2", "--seeds", "1", "--ensemble", "2"]
    argv += ["--epochs", "1", "--no-progress", "--plots", "none", "--output", str(tmp_path)]
    assert run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr()
    # Both runs train in one group (tests/training/test_grouped.py: bit for bit the per-run path).
    assert "grouped engine for 2 run(s) in 1 group(s) of 2" in printed.err + printed.out
    configs = sorted((tmp_path / "runs").rglob("config.yaml"))
    assert len(configs) == 2
    assert all(yaml.safe_load(path.read_text())["ensemble"] == 2 for path in configs)
    task, _ = load_task(configs[0].parent)
    assert isinstance(task.model, OrdinalEnsemble) and len(task.model.members) == 2
