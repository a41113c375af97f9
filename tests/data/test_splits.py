"""Splits: stratified hold-out, k-fold partitions, group carving, determinism per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emdloss.data import group_split, make_split, stratified_folds, stratified_split
from emdloss.data.splits import check_fold

LABELS = np.repeat(np.arange(5), [40, 13, 7, 2, 1])  # skewed, with tiny classes


def test_stratified_split_sizes_and_per_class_proportions() -> None:
    kept, held = stratified_split(LABELS, 0.3, seed=3)
    assert len(held) == round(0.3 * LABELS.size)
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(LABELS.size))
    held_counts = np.bincount(LABELS[held], minlength=5)
    quota = 0.3 * np.bincount(LABELS)
    # Every class within one sample of its share (largest-remainder allocation).
    assert np.all(np.abs(held_counts - quota) < 1.0 + 1e-9)
    # The last member of the singleton class stays on the kept side.
    assert np.bincount(LABELS[kept], minlength=5)[4] == 1


def test_stratified_split_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    a = stratified_split(LABELS, 0.3, seed=7)
    b = stratified_split(LABELS, 0.3, seed=7)
    c = stratified_split(LABELS, 0.3, seed=8)
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_partitions_are_disjoint_covering_and_balanced(k: int) -> None:
    folds = stratified_folds(LABELS, k, seed=0)
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == LABELS.size and sizes.max() - sizes.min() <= 1
    for c in range(5):
        per_fold = np.bincount(folds[LABELS == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1
    tests = [make_split(LABELS, seed=0, fold=f, num_folds=k).test for f in range(k)]
    union = np.sort(np.concatenate(tests))
    assert np.array_equal(union, np.arange(LABELS.size))  # every sample tested exactly once
    for f in range(k):
        split = make_split(LABELS, seed=0, fold=f, num_folds=k, val_fraction=0.2)
        parts = [split.train, split.val, split.test]
        assert sum(len(p) for p in parts) == LABELS.size
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(LABELS.size))
        assert "fold" in split.protocol


def test_make_split_holdout_val_does_not_change_the_test_set() -> None:
    a = make_split(LABELS, seed=1, val_fraction=0.1, test_fraction=0.25)
    b = make_split(LABELS, seed=1, val_fraction=0.3, test_fraction=0.25)
    assert np.array_equal(a.test, b.test)
    assert len(b.val) > len(a.val)


def test_group_split_keeps_groups_whole() -> None:
    groups = np.repeat([f"u{i}" for i in range(12)], 5)
    kept, held = group_split(groups, 0.25, seed=2)
    assert len(held) >= 0.25 * groups.size
    assert not set(groups[kept]) & set(groups[held])
    assert group_split(groups, 0.25, seed=2)[1].tolist() == held.tolist()


@pytest.mark.parametrize(
    ("fold", "num_folds", "match"),
    [(None, 5, "needs fold"), (5, 5, r"\[0, 4\]"), (0, 1, ">= 2"), (-1, None, r"\[0, 4\]")],
)
def test_bad_fold_arguments_are_refused(
    fold: int | None, num_folds: int | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        check_fold(fold, num_folds)


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(LABELS, 1.0, seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        make_split(LABELS, seed=0, test_fraction=0.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        stratified_split(np.array([0.5, 1.0]), 0.5, seed=0)


def test_splits_say_whether_their_test_rows_are_resampled(tmp_path: Path) -> None:
    # compare widens its paired intervals where the test rows change from run to run; the
    # data layer is what knows that.
    from emdloss.data import load_dataset
    from emdloss.data.splits import restrict_split, split_from_column

    assert make_split(LABELS, seed=0).resampled
    assert make_split(LABELS, seed=0, fold=1, num_folds=3).resampled
    names = ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    _, official = split_from_column(names, rows=[str(i) for i in range(10)], column="s", source="x")
    assert not official.resampled
    assert restrict_split(make_split(LABELS, seed=0), range(30)).resampled
    assert not restrict_split(official, range(8)).resampled

    path = tmp_path / "t.csv"
    rows = ["x,y,split"] + [f"{i},{i % 3},{names[i]}" for i in range(10)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    official_set = load_dataset(f"csv:{path}", target="y", split_column="split")
    assert not official_set.resampled
    assert load_dataset(f"csv:{path}", target="y", limit=2).resampled
    # Without the split column: a hold-out drawn from the seed (as the built-in tables do).
    held_out = load_dataset(f"csv:{path}", target="y", split_column="none", seed=0)
    assert held_out.resampled
