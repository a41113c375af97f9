"""The configuration of one training run, shared by the Python API, YAML files and the CLI.

Kept in one module: it is one dataclass, :class:`TrainConfig` (about 370 of the 530 lines),
whose fields, their documentation and their validation belong together, plus the value
coercions it uses; about 37% of the length is docstrings.

Every field of :class:`TrainConfig` is also a flag of ``emdloss train`` (underscores become
dashes) and a key of the ``--config`` YAML file (dashes or underscores accepted).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdloss._atomic import write_text
from emdloss.errors import UserError
from emdloss.training._distributed import DEFAULT_DIST_TIMEOUT

__all__ = ["METRIC_MODES", "OPTIMIZERS", "SCHEDULERS", "TrainConfig"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("exponential", "cosine", "none")
#: Whether a larger value of a metric is better ("max") or worse ("min").
METRIC_MODES = {
    "accuracy": "max",
    "one_off_accuracy": "max",
    "qwk": "max",
    "spearman": "max",
    "mae": "min",
    "rmse": "min",
    "rps": "min",
    "amae": "min",
    "loss": "min",
}
#: Fields that may change when a run is resumed (hardware, budget, presentation).
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "resume",
        "overwrite",
        "progress",
        "devices",
        "accelerator",
        "strategy",
        "num_nodes",
        "dist_timeout",
        "num_workers",
        "threads",
        "data_dir",
        "output",
    }
)


@dataclass
class TrainConfig:
    """All options of a training run.

    Attributes
    ----------
    dataset : str
        ``retinamnist``, a tabular set of ``skordinal`` (``era``, ``esl``, ``lev``, ``swd``),
        ``csv:PATH`` or ``folder:PATH``; anything :func:`emdloss.data.load_dataset` accepts.
    output : str or None
        The run directory; default ``runs/<dataset>-<loss>-seed<seed>``.
    loss : str
        A name of :data:`emdloss.training.LOSS_NAMES`.
    model : str or None
        A name of :data:`emdloss.models.MODEL_NAMES`; default ``mlp`` for tables and ``cnn``
        for images.
    epochs, seed, batch_size : int
        Training budget, random seed, mini-batch size.
    data_dir : str or None
        Where data files live (else ``EMDLOSS_DATA``, else a per-user cache).
    target, classes : str or None, list of str or None
        Target column and class order of CSV data.
    data_options : dict
        Further keyword arguments of :func:`emdloss.data.load_dataset`.
    soft_targets : bool
        Train on the data's soft target distributions where it has them (rating histograms);
        ``False`` trains every loss on the hard class labels alone (what ``emdloss compare
        --soft-targets hard-for-all`` uses so that every loss sees the same targets).
    fold, num_folds : int or None
        Cross-validation fold.
    pretrained : bool
        Load backbone weights from the local torch cache.
    model_options : dict
        Further keyword arguments of :func:`emdloss.models.build_model` (``hidden_sizes``,
        ``dropout``, ``width``, ...).
    loss_options : dict
        Further keyword arguments of :func:`emdloss.training.losses.build_loss`.
    ground_matrix : str or None
        Ground-distance matrix file (``.npy``, ``.csv``, ``.txt``) for ``loss="ground"``.
    ground_power : float
        Power :math:`p` of the default ground distance :math:`|x_i - x_j|^p`.
    warmup_epochs, ce_weight, emd_weight : int or None, float or None, float or None
        Recipe settings (cross-entropy warm-up and term weights); ``None`` keeps the preset's.
    optimizer : {"adamw", "sgd"}
        ``sgd`` is SGD with Nesterov momentum (the paper used momentum 0.98).
    lr, momentum, weight_decay : float
        Optimiser settings.
    scheduler : {"exponential", "cosine", "none"}
        ``exponential`` multiplies the learning rate by ``lr_decay`` after every epoch (the
        paper: 0.995); ``cosine`` anneals to 0 over ``epochs``.
    lr_decay : float
        Per-epoch factor of the exponential schedule.
    monitor : str
        Validation metric for model selection (``mae``, ``qwk``, ``accuracy``, ``rps``,
        ``loss``, ...); see :data:`METRIC_MODES`.
    monitor_rule : str
        Prediction rule whose metric is monitored.
    tta : bool
        Mirror test-time augmentation for images (average of image and horizontal flip).
    evaluate_test : bool
        Evaluate the best checkpoint on the test split when training ends (default). ``False``
        leaves the test split unread: ``emdloss compare --grid`` trains every setting so, and
        tests only the runs of the setting it chose on validation data
        (:func:`emdloss.training.run_deferred_test`).
    limit_train, limit_val, limit_test : int or None
        Use only the first N samples of a split (a fixed random subset, for quick runs).
    num_workers : int
        Data-loader worker processes.
    threads : int or None
        Intra-op torch threads; default one for the small models (``mlp``, ``cnn``), where
        more threads make epochs up to 10x slower on a loaded machine (docs/training.md),
        torch's own default for larger ones.
    accelerator, devices, strategy, num_nodes, precision : str, str or int, str, int, str
        Passed to :class:`lightning.pytorch.Trainer`.
    dist_timeout : float
        Seconds a DDP process waits for the others in any collective before the run stops with
        an error naming this option (default 300; torch's own default is 30 minutes, so a
        stopped or hung process froze its partners for that long). See
        :mod:`emdloss.training._distributed` for why 300 s.
    deterministic : bool
        Ask torch for deterministic algorithms.
    implementation : str
        Implementation of the EMD losses (see :func:`emdloss._ordinal.implementation`):
        ``"fused"`` (default, the PyTorch path) or ``"cpp"`` (the C++ CPU kernel, built if
        needed); ``"library"`` and ``"reference"`` for checks. Recorded in ``config.yaml``; a
        resumed run keeps it, so its numbers do not depend on the machine's kernel cache.
    progress : bool
        Progress bars.
    resume : bool
        Continue the run in ``output`` from ``checkpoints/last.ckpt``.
    overwrite : bool
        Replace an existing finished or unfinished run in ``output``.
    """

    dataset: str = "retinamnist"
    output: str | None = None
    loss: str = "emd2"
    model: str | None = None
    epochs: int = 30
    seed: int = 0
    batch_size: int = 64
    data_dir: str | None = None
    target: str | None = None
    classes: list[str] | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    soft_targets: bool = True
    fold: int | None = None
    num_folds: int | None = None
    pretrained: bool = False
    model_options: dict[str, Any] = field(default_factory=dict)
    loss_options: dict[str, Any] = field(default_factory=dict)
    ground_matrix: str | None = None
    ground_power: float = 1.0
    warmup_epochs: int | None = None
    ce_weight: float | None = None
    emd_weight: float | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "exponential"
    lr_decay: float = 0.995
    monitor: str = "mae"
    monitor_rule: str = "argmax"
    tta: bool = False
    evaluate_test: bool = True
    limit_train: int | None = None
    limit_val: int | None = None
    limit_test: int | None = None
    num_workers: int = 0
    threads: int | None = None
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    dist_timeout: float = DEFAULT_DIST_TIMEOUT
    precision: str = "32-true"
    deterministic: bool = True
    implementation: str = "fused"
    progress: bool = True
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all options, in declaration order.

        Examples
        --------
        >>> TrainConfig.field_names()[:3]
        ['dataset', 'output', 'loss']
        """
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], *, base: TrainConfig | None = None
    ) -> TrainConfig:
        """Build a config from a mapping whose keys are option names (dashes or underscores).

        Values may be strings (as from a command line): they are converted to the field's type.
        Keys not given keep the value of ``base`` (or the default).

        Parameters
        ----------
        values : Mapping
            Options.
        base : TrainConfig, optional
            Values for keys that are not given.

        Returns
        -------
        TrainConfig

        Raises
        ------
        ValueError
            For an unknown key (the message lists the valid keys) or a bad value.

        Examples
        --------
        >>> TrainConfig.from_dict({"loss": "ce", "batch-size": "16"}).batch_size
        16
        """
        known = set(cls.field_names())
        merged = dataclasses.asdict(base) if base is not None else {}
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                valid = ", ".join(name.replace("_", "-") for name in cls.field_names())
                raise ValueError(f"unknown option {raw_key!r}; valid options: {valid}")
            merged[key] = _coerce(key, value)
        return cls(**merged)

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str], *, base: TrainConfig | None = None
    ) -> TrainConfig:
        """Read a YAML file of options (see :meth:`from_dict`).

        Parameters
        ----------
        path : path-like
            YAML file with a mapping at the top level.
        base : TrainConfig, optional
            Values for keys the file does not set.

        Returns
        -------
        TrainConfig

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
        >>> _ = p.write_text("loss: w1\\nepochs: 3\\n")
        >>> TrainConfig.from_yaml(p).epochs
        3
        """
        from emdloss._yaml import load_yaml

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file not found: {file}")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"config file {file} is not UTF-8 text: {error}") from None
        loaded = load_yaml(text, f"config file {file}")  # plain data, no aliases
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise UserError(
                f"config file {file} must hold a mapping of options at top level, "
                f"got {type(loaded).__name__}"
            )
        try:
            return cls.from_dict(loaded, base=base)
        except ValueError as error:  # names the option, the value and what was expected
            raise UserError(f"config file {file}: {error}") from None

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """All options as plain Python values (YAML/JSON-serialisable).

        Examples
        --------
        >>> TrainConfig().to_dict()["loss"]
        'emd2'
        """
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the options as YAML, atomically.

        Parameters
        ----------
        path : path-like
            Target file.

        Returns
        -------
        pathlib.Path

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "config.yaml"
        >>> TrainConfig.from_yaml(TrainConfig(loss="ce").save(p)).loss
        'ce'
        """
        from emdloss._yaml import dump_yaml

        return write_text(path, dump_yaml(self.to_dict()))

    @property
    def run_dir(self) -> Path:
        """The run directory (``output``, or a name derived from dataset, loss and seed).

        Examples
        --------
        >>> TrainConfig(dataset="csv:/a/b.csv", loss="ce", seed=1).run_dir.as_posix()
        'runs/csv-b-ce-seed1'
        """
        if self.output:
            return Path(self.output)
        name = Path(self.dataset.split(":", 1)[-1]).stem if ":" in self.dataset else self.dataset
        prefix = self.dataset.split(":", 1)[0] + "-" if ":" in self.dataset else ""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{prefix}{name}-{self.loss}-seed{self.seed}")
        return Path("runs") / slug

    def monitor_mode(self) -> str:
        """``"min"`` or ``"max"`` for :attr:`monitor`.

        Examples
        --------
        >>> TrainConfig(monitor="qwk").monitor_mode()
        'max'
        """
        return METRIC_MODES[self.monitor]

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of the options whose values differ from ``other``'s.

        Examples
        --------
        >>> TrainConfig(epochs=3).differences(TrainConfig(epochs=4, lr=0.1))
        ['epochs', 'lr']
        """
        mine, theirs = self.to_dict(), other.to_dict()
        return [name for name in self.field_names() if mine[name] != theirs[name]]

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check types and ranges; ValueError names the option and the expected value."""
        for name in self.field_names():
            setattr(self, name, _coerce(name, getattr(self, name)))
        if not self.dataset:
            raise ValueError("option dataset='': expected a data set name or csv:PATH/folder:PATH")
        for name in ("epochs", "batch_size", "num_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"option {name}={getattr(self, name)}: expected an integer >= 1")
        if self.num_workers < 0:
            raise ValueError(f"option num_workers={self.num_workers}: expected an integer >= 0")
        if not self.dist_timeout > 0:
            raise ValueError(f"option dist_timeout={self.dist_timeout}: expected seconds > 0")
        for name in (
            "limit_train",
            "limit_val",
            "limit_test",
            "warmup_epochs",
            "num_folds",
            "threads",
        ):
            value = getattr(self, name)
            if value is not None and value < (2 if name == "num_folds" else 1):
                low = 2 if name == "num_folds" else 1
                raise ValueError(f"option {name}={value}: expected an integer >= {low}")
        if self.fold is not None and self.fold < 0:
            raise ValueError(f"option fold={self.fold}: expected an integer >= 0")
        from emdloss.decoding import RULES
        from emdloss.training._names import LOSS_NAMES

        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; valid losses: {', '.join(LOSS_NAMES)}")
        if self.model is not None:
            from emdloss.models import MODEL_NAMES

            if self.model not in MODEL_NAMES:
                valid = ", ".join(MODEL_NAMES)
                raise ValueError(f"unknown model {self.model!r}; valid models: {valid}")
        if self.monitor_rule not in RULES:
            valid = ", ".join(RULES)
            raise ValueError(f"option monitor_rule={self.monitor_rule!r}: expected one of {valid}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"option optimizer={self.optimizer!r}: expected one of {OPTIMIZERS}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"option scheduler={self.scheduler!r}: expected one of {SCHEDULERS}")
        from emdloss._ordinal import IMPLEMENTATIONS

        if self.implementation not in IMPLEMENTATIONS:
            valid = ", ".join(IMPLEMENTATIONS)
            raise ValueError(
                f"option implementation={self.implementation!r}: expected one of {valid}"
            )
        if self.monitor not in METRIC_MODES:
            valid = ", ".join(METRIC_MODES)
            raise ValueError(f"option monitor={self.monitor!r}: expected one of {valid}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"option lr={self.lr}: expected a finite number > 0")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"option lr_decay={self.lr_decay}: expected a number in (0, 1]")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"option momentum={self.momentum}: expected a number in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"option weight_decay={self.weight_decay}: expected a number >= 0")
        if self.ground_power <= 0:
            raise ValueError(f"option ground_power={self.ground_power}: expected a number > 0")
        for name in ("ce_weight", "emd_weight"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"option {name}={value}: expected a finite number >= 0")


# ---------------------------------------------------------------------- value coercion
#: The on/off options (``--tta`` / ``--no-tta`` on the command line).
BOOL_FIELDS = {
    "pretrained",
    "tta",
    "evaluate_test",
    "deterministic",
    "progress",
    "resume",
    "overwrite",
    "soft_targets",
}
_INT_FIELDS = {"epochs", "seed", "batch_size", "num_workers", "num_nodes"}
_OPT_INT_FIELDS = {
    "fold",
    "num_folds",
    "limit_train",
    "limit_val",
    "limit_test",
    "warmup_epochs",
    "threads",
}
_FLOAT_FIELDS = {"ground_power", "lr", "momentum", "weight_decay", "lr_decay", "dist_timeout"}
_OPT_FLOAT_FIELDS = {"ce_weight", "emd_weight"}
_OPT_STR_FIELDS = {"output", "model", "data_dir", "target", "ground_matrix"}
_DICT_FIELDS = {"data_options", "model_options", "loss_options"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any) -> Any:
    """Convert ``value`` to the type of option ``name`` (strings from a command line allowed)."""
    optional = _OPT_INT_FIELDS | _OPT_FLOAT_FIELDS
    if name in optional and (value is None or (isinstance(value, str) and value == "")):
        return None
    if name in BOOL_FIELDS:
        return _as_bool(name, value)
    if name in _INT_FIELDS | _OPT_INT_FIELDS:
        return _as_int(name, value)
    if name in _FLOAT_FIELDS | _OPT_FLOAT_FIELDS:
        return _as_float(name, value)
    if name in _OPT_STR_FIELDS:
        return None if value is None or value == "" else str(value)
    if name in _DICT_FIELDS:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"option {name}={value!r}: expected a mapping of KEY: VALUE")
        return {str(key).replace("-", "_"): item for key, item in value.items()}
    if name == "classes":
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else list(value)
        names = [str(item).strip() for item in items]
        if not names or any(not item for item in names):
            raise ValueError(f"option classes={value!r}: expected comma-separated class names")
        return names
    if name == "devices":
        if isinstance(value, bool):
            raise ValueError(f"option devices={value!r}: expected 'auto', a count or a list")
        if isinstance(value, int):
            return value
        text = str(value).strip()
        return int(text) if re.fullmatch(r"-?\d+", text) else text
    if isinstance(value, (Mapping, list, tuple, set)) or value is None:
        # A text option (dataset, loss, accelerator, ...) given a list or a mapping (a
        # tampered config.yaml): refused, not turned into its repr.
        raise ValueError(f"option {name}={value!r}: expected a text value")
    return str(value)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"option {name}={value!r}: expected true or false")


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"option {name}={value!r}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError(f"option {name}={value!r}: expected an integer")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"option {name}={value!r}: expected a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r}: expected a number") from None
    if not math.isfinite(result):
        raise ValueError(f"option {name}={value!r}: expected a finite number")
    return result
