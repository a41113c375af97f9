"""Clearer names with the old ones kept as deprecated aliases (issue 9)."""

from __future__ import annotations

import pytest
import torch

from emdloss import EMDRecipeLoss, SquaredEMDLoss
from emdloss import functional as EF
from emdloss.ground import ordinal_ground_distance


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 0])


def test_normalization_mean_is_a_deprecated_alias_of_class_mean() -> None:
    x, y = _data()
    new = EF.squared_emd(x, y, normalization="class_mean")
    with pytest.warns(DeprecationWarning, match=r"normalization='mean' is deprecated.*class_mean"):
        old = EF.squared_emd(x, y, normalization="mean")
    assert old == new
    # the value of "class_mean" is 1/C times the sum over the C CDF terms (the authors' loss)
    torch.testing.assert_close(new, EF.squared_emd(x, y, normalization="sum") / 4)
    assert EF.squared_emd(x, y) == new  # still the default


def test_module_normalization_alias() -> None:
    x, y = _data()
    with pytest.warns(DeprecationWarning, match="class_mean"):
        module = SquaredEMDLoss(normalization="mean")
    assert module.normalization == "class_mean"
    assert module(x, y) == SquaredEMDLoss()(x, y)


def test_recipe_ground_distance_is_a_deprecated_alias_of_cost_matrix() -> None:
    x, y = _data()
    cm = ordinal_ground_distance(4) - 0.5  # negative entries: a cost matrix, not a distance
    kw = {"emd_term": "fixed", "warmup_epochs": 0}
    new = EMDRecipeLoss(4, cost_matrix=cm, **kw)  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning, match="pass cost_matrix"):
        old = EMDRecipeLoss(4, ground_distance=cm, **kw)  # type: ignore[arg-type]
    assert old(x.float(), y) == new(x.float(), y)
    with pytest.raises(ValueError, match="not both"), pytest.warns(DeprecationWarning):
        EMDRecipeLoss(4, cost_matrix=cm, ground_distance=cm, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- moved import paths
# The public names of four modules in emdloss 0.1.0 (read from that release's source). Each
# must still be defined there, or answer with a DeprecationWarning naming the release that
# removes it and return the object from its new home (issue 19: one address per name).
RELEASED_0_1_0 = {
    "emdloss.training.run": (
        "CONFIG_FILE DATA_FILE METRICS_FILE HISTORY_FILE PREDICTIONS_FILE CHECKPOINT_DIR "
        "RUN_FILES RunResult load_data build_task quiet_lightning_logs train evaluate load_task "
        "predict predictions_csv"
    ),
    "emdloss.metrics.functional": (
        "check_positions check_probs confusion_matrix accuracy_from_confmat "
        "one_off_accuracy_from_confmat mean_absolute_error_from_confmat "
        "root_mean_squared_error_from_confmat per_class_mae_from_confmat "
        "average_mae_from_confmat quadratic_weighted_kappa_from_confmat spearman_from_confmat "
        "accuracy one_off_accuracy mean_absolute_error root_mean_squared_error per_class_mae "
        "average_mae quadratic_weighted_kappa spearman ranked_probability_score"
    ),
    # CLIError was never raised (dead code) and is removed.
    "emdloss.cli": "SUMMARY_METRICS build_parser format_table main",
    "emdloss.training.losses": (
        "OUR_LOSS_NAMES PEER_LOSS_NAMES LOSS_NAMES TrainingLoss regression_to_probabilities "
        "cumulative_to_probabilities build_loss"
    ),
}
_NEEDS = {"emdloss.training.run": "lightning", "emdloss.training.losses": "lightning"}


def _module(name: str):  # type: ignore[no-untyped-def]
    import importlib

    pytest.importorskip(_NEEDS.get(name, "torchmetrics"))
    return importlib.import_module(name)


@pytest.mark.parametrize("module_name", sorted(RELEASED_0_1_0))
def test_every_released_name_still_resolves_and_a_moved_one_warns(module_name: str) -> None:
    import warnings

    module = _module(module_name)
    for name in RELEASED_0_1_0[module_name].split():
        if name in vars(module):  # still defined (or bound) here: no warning
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                getattr(module, name)
            continue
        with pytest.warns(DeprecationWarning) as caught:
            value = getattr(module, name)
        message = str(caught[0].message)
        assert message.startswith(f"{module_name}.{name} is deprecated"), message
        assert "removed in emdloss 0.3.0" in message, message
        new, _, renamed = module._MOVED[name].partition(":")  # "module:NEW_NAME": renamed
        assert getattr(__import__(new, fromlist=[name]), renamed or name) is value
        if new.split(".")[-1].startswith("_"):
            assert "no public replacement" in message, message
        else:
            assert f"import it from {new}" in message, message


def test_moved_names_are_not_module_globals() -> None:
    # a moved name must not also be bound in the old module: then it would not warn
    for module_name in RELEASED_0_1_0:
        module = _module(module_name)
        assert not set(getattr(module, "_MOVED", {})) & set(vars(module)), module_name


def test_from_import_of_an_old_path_warns_at_the_importing_line() -> None:
    pytest.importorskip("lightning")
    import emdloss.training

    with pytest.warns(DeprecationWarning, match=r"training\.run\.train .*emdloss\.training") as w:
        from emdloss.training.run import train
    assert train is emdloss.training.train
    assert w[0].filename == __file__  # stacklevel: the user's line, not emdloss's


def test_a_name_that_never_was_public_is_an_attribute_error() -> None:
    module = _module("emdloss.training.run")
    with pytest.raises(AttributeError, match="launched_rank"):
        module.launched_rank  # noqa: B018 - added after 0.1.0 and never public there
    with pytest.raises(AttributeError, match="_LOOP_SCAN_MIN"):
        import emdloss._ordinal

        emdloss._ordinal._LOOP_SCAN_MIN  # noqa: B018 - read in _ordinal_fused: one address
