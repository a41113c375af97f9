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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdloss._atomic import write_text
from emdloss.errors import UserError
from emdloss.training._distributed import DEFAULT_DIST_TIMEOUT
from emdloss.vocabulary import IMPLEMENTATIONS, LOSS_NAMES, METRIC_MODES, RULES

__all__ = ["OPTIMIZERS", "SCHEDULERS", "TrainConfig"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("exponential", "cosine", "none")


def _option(
    default: Any = None,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    check: tuple[Callable[[Any], bool], str] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    resumable: bool = False,
    protocol: bool = True,
    compare: str | None = None,
) -> Any:
    """A field of :class:`TrainConfig` with what is known about the option, stated once.

    Parameters
    ----------
    default, factory
        The default value, or a function making it (mappings).
    help : str
        The help text of ``emdloss train --help`` (the default is added to it).
    check : (predicate, str), optional
        A test of a value that is not None, and what it expects (``"an integer >= 1"``): a
        value that fails is refused as ``option NAME=VALUE: expected ...``.
    flag, metavar : str, optional
        The command-line flag when it is not ``--name-with-dashes`` (``--data-option``), and
        the placeholder of its value.
    resumable : bool
        Whether a resumed run may change the option (:data:`RESUMABLE_CHANGES`).
    protocol : bool
        Whether the option defines what a run trains: a comparison records it in
        ``compare.json`` and refuses a rerun that changes it.
    compare : str, optional
        ``emdloss compare`` has the option as a flag of its own, with this help text
        (``""``: the same flag as ``train``'s, in compare's data options).
    """
    metadata = {
        "help": help,
        "check": check,
        "flag": flag,
        "metavar": metavar,
        "resumable": resumable,
        "protocol": protocol,
        "compare": compare,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: value >= low


_AT_LEAST_1 = (_at_least(1), "an integer >= 1")
_FINITE_AT_LEAST_0 = (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")


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
        ``loss``, ...); see :data:`emdloss.vocabulary.METRIC_MODES`.
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

    # One entry per option: its type and default, and in ``_option`` its help text (the CLI's
    # ``--help``), its check, whether a resume may change it, whether it is part of a
    # comparison's protocol and whether ``emdloss compare`` has it as a flag of its own.
    dataset: str = _option(
        "retinamnist",
        help="retinamnist, era, esl, esl6, lev, swd, adience, csv:PATH, folder:PATH, images:PATH",
        check=(bool, "a data set name or csv:PATH/folder:PATH"),
    )
    output: str | None = _option(
        None,
        help="run directory (default runs/<dataset>-<loss>-seed<seed>)",
        resumable=True,
        protocol=False,
    )
    loss: str = _option(
        "emd2", help="training loss (see `emdloss train --help` epilog for the list)"
    )
    model: str | None = _option(
        None,
        help="network: mlp, cnn, resnet18, ... (default mlp for tables, cnn for small images)",
        compare="model name (default: mlp for tables, cnn for images)",
    )
    epochs: int = _option(
        30,
        help="training epochs",
        check=_AT_LEAST_1,
        resumable=True,
        compare="training epochs of every run",
    )
    seed: int = _option(0, help="random seed (splits, initialisation, shuffling)")
    batch_size: int = _option(
        64, help="mini-batch size per process", check=_AT_LEAST_1, compare="mini-batch size"
    )
    data_dir: str | None = _option(
        None,
        help="directory of data files (else $EMDLOSS_DATA, else a per-user cache)",
        resumable=True,
        protocol=False,
        compare="directory of data files (else EMDLOSS_DATA, else a per-user cache)",
    )
    target: str | None = _option(None, help="target column of a CSV data set", compare="")
    classes: list[str] | None = _option(
        None,
        help="class names in order, comma-separated (CSV and image folders)",
        metavar="A,B,C",
        compare="",
    )
    data_options: dict[str, Any] = _option(
        factory=dict,
        help="data option KEY=VALUE (repeatable): for CSV files ignore=, features=, "
        "categorical=, missing=, bins=, ... (listed below), for every source val_fraction=, "
        "test_fraction=, limit=",
        flag="data-option",
        compare="",
    )
    soft_targets: bool = _option(
        True, help="train on the data's soft target distributions where it has them"
    )
    fold: int | None = _option(
        None, help="test fold of k-fold cross-validation", check=(_at_least(0), "an integer >= 0")
    )
    num_folds: int | None = _option(
        None, help="number of folds", check=(_at_least(2), "an integer >= 2")
    )
    pretrained: bool = _option(
        False, help="start backbones from ImageNet weights in the local torch cache"
    )
    model_options: dict[str, Any] = _option(
        factory=dict,
        help="further model option KEY=VALUE (repeatable), e.g. dropout=0.2",
        flag="model-option",
    )
    loss_options: dict[str, Any] = _option(
        factory=dict,
        help="further loss option KEY=VALUE (repeatable), e.g. mu=0.25",
        flag="loss-option",
    )
    ground_matrix: str | None = _option(
        None, help="ground-distance matrix file (.npy, .csv, .txt) for --loss ground"
    )
    ground_power: float = _option(
        1.0,
        help="power p of the default ground distance |x_i - x_j|^p",
        check=(lambda v: v > 0, "a number > 0"),
    )
    warmup_epochs: int | None = _option(
        None, help="recipe: epochs of cross-entropy before the EMD term", check=_AT_LEAST_1
    )
    ce_weight: float | None = _option(
        None, help="recipe: weight of cross-entropy", check=_FINITE_AT_LEAST_0
    )
    emd_weight: float | None = _option(
        None, help="recipe: weight of the EMD term", check=_FINITE_AT_LEAST_0
    )
    optimizer: str = _option(
        "adamw",
        help="adamw or sgd (SGD with Nesterov momentum)",
        check=(lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}"),
    )
    lr: float = _option(
        1e-3,
        help="learning rate",
        check=(lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
        compare="learning rate",
    )
    momentum: float = _option(
        0.9,
        help="SGD momentum (the paper: 0.98)",
        check=(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    )
    weight_decay: float = _option(
        1e-4, help="weight decay", check=(lambda v: v >= 0, "a number >= 0")
    )
    scheduler: str = _option(
        "exponential",
        help="learning-rate schedule: exponential, cosine or none",
        check=(lambda v: v in SCHEDULERS, f"one of {SCHEDULERS}"),
    )
    lr_decay: float = _option(
        0.995,
        help="factor per epoch of the exponential schedule (the paper: 0.995)",
        check=(lambda v: 0 < v <= 1, "a number in (0, 1]"),
    )
    monitor: str = _option(
        "mae",
        help="validation metric for model selection (mae, qwk, accuracy, rps, loss, ...)",
        check=(lambda v: v in METRIC_MODES, "one of " + ", ".join(METRIC_MODES)),
    )
    monitor_rule: str = _option(
        "argmax",
        help="prediction rule of the monitored metric",
        check=(lambda v: v in RULES, "one of " + ", ".join(RULES)),
    )
    tta: bool = _option(False, help="mirror test-time augmentation for images")
    evaluate_test: bool = _option(
        True,
        help="evaluate the best checkpoint on the test split when training ends "
        "(--no-evaluate-test leaves it unread, as compare --grid does until it has chosen)",
    )
    limit_train: int | None = _option(
        None, help="use at most N training samples (stratified)", check=_AT_LEAST_1
    )
    limit_val: int | None = _option(
        None, help="use at most N validation samples (stratified)", check=_AT_LEAST_1
    )
    limit_test: int | None = _option(
        None, help="use at most N test samples (stratified)", check=_AT_LEAST_1
    )
    num_workers: int = _option(
        0,
        help="data-loader worker processes",
        check=(_at_least(0), "an integer >= 0"),
        resumable=True,
        protocol=False,
    )
    threads: int | None = _option(
        None,
        help="intra-op torch threads (default 1 for mlp and cnn, torch's default otherwise)",
        check=_AT_LEAST_1,
        resumable=True,
    )
    accelerator: str = _option("auto", help="cpu, gpu, mps or auto", resumable=True, protocol=False)
    devices: str | int = _option(
        "auto",
        help="devices (processes) per node: a count, a list like 0,1, or auto",
        resumable=True,
        protocol=False,
    )
    strategy: str = _option(
        "auto",
        help="auto, ddp, ddp_spawn, ... (Lightning strategies)",
        resumable=True,
        protocol=False,
    )
    num_nodes: int = _option(
        1, help="number of machines", check=_AT_LEAST_1, resumable=True, protocol=False
    )
    dist_timeout: float = _option(
        DEFAULT_DIST_TIMEOUT,
        help="seconds a DDP process waits for the others before stopping the run (default 300)",
        check=(lambda v: v > 0, "seconds > 0"),
        resumable=True,
        protocol=False,
    )
    precision: str = _option("32-true", help="32-true, 16-mixed, bf16-mixed, ...")
    deterministic: bool = _option(True, help="deterministic algorithms")
    implementation: str = _option(
        "fused",
        help="EMD loss implementation: fused (PyTorch) or cpp (C++ CPU kernel); "
        "recorded in config.yaml and reused on resume",
        check=(lambda v: v in IMPLEMENTATIONS, "one of " + ", ".join(IMPLEMENTATIONS)),
    )
    progress: bool = _option(True, help="progress bars", resumable=True, protocol=False)
    resume: bool = _option(
        False,
        help="continue the run in --output from checkpoints/last.ckpt",
        resumable=True,
        protocol=False,
    )
    overwrite: bool = _option(
        False, help="replace an existing run in --output", resumable=True, protocol=False
    )

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
                raise UserError(f"unknown option {raw_key!r}; valid options: {valid}")
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
        file = Path(path)
        loaded = read_options(file)
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
        """Check types and ranges; UserError names the option and the expected value."""
        for name in self.field_names():
            setattr(self, name, _coerce(name, getattr(self, name)))
        for item in dataclasses.fields(self):
            value, check = getattr(self, item.name), item.metadata.get("check")
            if check is not None and value is not None and not check[0](value):
                raise UserError(f"option {item.name}={value!r}: expected {check[1]}")
        if self.loss not in LOSS_NAMES:
            raise UserError(f"unknown loss {self.loss!r}; valid losses: {', '.join(LOSS_NAMES)}")
        if self.model is not None:
            from emdloss.models import MODEL_NAMES

            if self.model not in MODEL_NAMES:
                valid = ", ".join(MODEL_NAMES)
                raise UserError(f"unknown model {self.model!r}; valid models: {valid}")


# ---------------------------------------------------------------------- value coercion
def read_options(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The options of a YAML file (a mapping at the top level; an empty file: none).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
    >>> _ = p.write_text("lr: 0.1\\n")
    >>> dict(read_options(p))
    {'lr': 0.1}
    """
    from emdloss._yaml import load_yaml  # lazily: the parser reads the fields without PyYAML

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"config file {file} is not UTF-8 text: {error}") from None
    loaded = load_yaml(text, f"config file {file}")  # plain data, no aliases
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise UserError(
            f"config file {file} must hold a mapping of options at top level, "
            f"got {type(loaded).__name__}"
        )
    return loaded


#: Every option's field (type, default and, in ``metadata``, what :func:`_option` records).
OPTIONS: Mapping[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(TrainConfig)}
#: Fields that may change when a run is resumed (hardware, budget, presentation).
RESUMABLE_CHANGES = frozenset(name for name, f in OPTIONS.items() if f.metadata["resumable"])
#: Options that change how a run is executed or shown, not what it trains: a comparison may
#: be resumed with other values.
NOT_PROTOCOL = frozenset(name for name, f in OPTIONS.items() if not f.metadata["protocol"])
#: The on/off options (``--tta`` / ``--no-tta`` on the command line).
BOOL_FIELDS = frozenset(name for name, f in OPTIONS.items() if f.type == "bool")
#: The mapping options (``--data-option KEY=VALUE``, ...).
MAPPING_OPTIONS = tuple(name for name, f in OPTIONS.items() if f.type.startswith("dict"))
#: The train options ``emdloss compare`` passes to every run as flags of its own, with their
#: own help (the others it takes as ``--set KEY=VALUE``) ...
COMPARE_PASSTHROUGH = tuple(name for name, f in OPTIONS.items() if f.metadata["compare"])
#: ... and the data options it shares with ``emdloss train`` (the same flags).
COMPARE_DATA_FLAGS = tuple(name for name, f in OPTIONS.items() if f.metadata["compare"] == "")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any) -> Any:
    """Convert ``value`` to the type of option ``name`` (strings from a command line allowed),
    read from the field's annotation."""
    kind = OPTIONS[name].type
    if kind.endswith(" | None") and kind != "list[str] | None":
        if value is None or (isinstance(value, str) and value == ""):
            return None
        kind = kind.removesuffix(" | None")
    if kind == "bool":
        return _as_bool(name, value)
    if kind == "int":
        return _as_int(name, value)
    if kind == "float":
        return _as_float(name, value)
    if kind.startswith("dict"):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise UserError(f"option {name}={value!r}: expected a mapping of KEY: VALUE")
        return {str(key).replace("-", "_"): item for key, item in value.items()}
    if kind == "list[str] | None":
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else list(value)
        names = [str(item).strip() for item in items]
        if not names or any(not item for item in names):
            raise UserError(f"option {name}={value!r}: expected comma-separated class names")
        return names
    if kind == "str | int":
        if isinstance(value, bool):
            raise UserError(f"option {name}={value!r}: expected 'auto', a count or a list")
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
    raise UserError(f"option {name}={value!r}: expected true or false")


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise UserError(f"option {name}={value!r}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise UserError(f"option {name}={value!r}: expected an integer")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise UserError(f"option {name}={value!r}: expected a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise UserError(f"option {name}={value!r}: expected a number") from None
    if not math.isfinite(result):
        raise UserError(f"option {name}={value!r}: expected a finite number")
    return result
