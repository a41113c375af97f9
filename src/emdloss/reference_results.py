"""Published results to stand beside ours, with the protocol under which each was obtained.

The numbers are those of ``reference.md`` section 4 (the project's reference notes), copied
verbatim: MedMNIST v2 on RetinaMNIST, TOC-UCO on the tabular ordinal benchmarks ERA, ESL (regrouped
to 6 classes), LEV and SWD, dlordinal's own comparison on FGNet and CORAL's age-estimation results.
Nothing here is ours and nothing is reproduced: these rows are printed next to our runs by
``emdloss compare`` so that a reader can see how far apart the protocols are.

Metric keys follow :mod:`emdloss.metrics` (``accuracy``, ``mae``, ``qwk``, ...); a published
metric that we do not compute (the MedMNIST AUC) keeps its own key (``auc``).

Examples
--------
>>> table = reference_tables("lev")[0]
>>> table.source
'TOC-UCO'
>>> [row.method for row in table.rows][:2]
['LogAT', 'MLP (CE)']
>>> table.rows[0].metrics["mae"]
0.607
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "REFERENCE_TABLES",
    "ReferenceRow",
    "ReferenceTable",
    "reference_tables",
]


@dataclass(frozen=True)
class ReferenceRow:
    """One published result: a method and the metrics it reported.

    Parameters
    ----------
    method : str
        The method as the source names it (e.g. ``"ResNet-18 (28)"``).
    metrics : Mapping[str, float]
        Published values keyed by our metric names (``accuracy``, ``mae``, ``qwk``, ...).
    spread : Mapping[str, float], optional
        The published standard deviation over the source's repetitions, where stated.

    Examples
    --------
    >>> ReferenceRow("LogAT", {"mae": 0.607}).metrics["mae"]
    0.607
    """

    method: str
    metrics: Mapping[str, float]
    spread: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ReferenceTable:
    """Published rows for one data set from one source, with the protocol they were obtained under.

    Parameters
    ----------
    dataset : str
        Our name of the data set (``"retinamnist"``, ``"era"``, ``"esl6"``, ...).
    source : str
        Short name of the source (``"MedMNIST v2"``, ``"TOC-UCO"``, ...).
    citation : str
        The publication.
    protocol : str
        How the numbers were obtained (split, repetitions, tuning, metrics), as published.
    num_classes : int
        Number of classes in the source's version of the data set.
    rows : tuple of ReferenceRow
        The published results.
    split : str
        The kind of split (``"official"`` or ``"holdout"``): our runs are comparable only on the
        same kind of split.
    repetitions : int or None
        How many splits or seeds the published numbers summarise (``None`` when a single run or
        not stated).

    Examples
    --------
    >>> t = reference_tables("swd")[0]
    >>> (t.num_classes, t.split, t.repetitions)
    (4, 'holdout', 30)
    """

    dataset: str
    source: str
    citation: str
    protocol: str
    num_classes: int
    rows: tuple[ReferenceRow, ...]
    split: str
    repetitions: int | None = None
    metrics: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.metrics:
            seen: list[str] = []
            for row in self.rows:
                seen.extend(k for k in row.metrics if k not in seen)
            object.__setattr__(self, "metrics", tuple(seen))


def _rows(
    metric_names: tuple[str, ...], data: dict[str, tuple[float, ...]]
) -> tuple[ReferenceRow, ...]:
    return tuple(
        ReferenceRow(method, MappingProxyType(dict(zip(metric_names, values, strict=True))))
        for method, values in data.items()
    )


_MEDMNIST = ReferenceTable(
    dataset="retinamnist",
    source="MedMNIST v2",
    citation=(
        "Yang et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical "
        "image classification, Scientific Data 10, 41 (2023)"
    ),
    protocol=(
        "official split (train 1080 / val 120 / test 400), test-set ACC and AUC; ResNets at 28 px "
        "or upsampled to 224 px and AutoML systems; no seed spread published and no MAE/QWK"
    ),
    num_classes=5,
    split="official",
    repetitions=None,
    rows=_rows(
        ("accuracy", "auc"),
        {
            "ResNet-18 (28)": (0.524, 0.717),
            "ResNet-18 (224)": (0.493, 0.710),
            "ResNet-50 (28)": (0.528, 0.726),
            "ResNet-50 (224)": (0.511, 0.716),
            "auto-sklearn": (0.515, 0.690),
            "AutoKeras": (0.503, 0.719),
            "Google AutoML Vision": (0.531, 0.750),
        },
    ),
)

_MEDMNIST_PLUS = ReferenceTable(
    dataset="retinamnist",
    source="MedMNIST+",
    citation=(
        "Doerrich et al., Rethinking model prototyping through the MedMNIST+ dataset "
        "collection, Scientific Reports (2025)"
    ),
    protocol=(
        "official split, 28 px images zero-padded to 224, ImageNet-pretrained backbones, AdamW "
        "1e-4, early stopping, 3 seeds; test ACC mean ± sd. Pretrained weights cannot be "
        "downloaded on our machines: our networks start from random weights"
    ),
    num_classes=5,
    split="official",
    repetitions=3,
    rows=(
        ReferenceRow(
            "VGG16 end-to-end",
            MappingProxyType({"accuracy": 0.5417, "auc": 0.7535}),
            MappingProxyType({"accuracy": 0.0077}),
        ),
        ReferenceRow(
            "ViT-B/16 linear probe",
            MappingProxyType({"accuracy": 0.5425}),
            MappingProxyType({"accuracy": 0.0108}),
        ),
    ),
)

_TOC_UCO_CITATION = "Ayllon-Gavilan et al., TOC-UCO, Neurocomputing (2026)"
_TOC_UCO_PROTOCOL = (
    "30 stratified 70/30 hold-outs (seeds 0-29), standardised inputs, hyper-parameters tuned by "
    "cross-validation on AMAE; test MAE and QWK"
)
_TOC_UCO_METHODS = ("LogAT", "MLP (CE)", "MLP-CLM", "MLP-T", "XGBoost", "OEAB")
_TOC_UCO = {
    # dataset: (classes, MAE per method, QWK per method), in the order of _TOC_UCO_METHODS.
    "era": (
        9,
        (1.485, 1.969, 1.569, 2.331, 1.693, 1.238),
        (0.566, 0.381, 0.358, 0.251, 0.462, 0.557),
    ),
    "esl6": (
        6,
        (0.330, 0.312, 0.328, 0.341, 0.354, 0.302),
        (0.909, 0.910, 0.909, 0.904, 0.894, 0.904),
    ),
    "lev": (
        5,
        (0.607, 0.559, 0.543, 0.642, 0.587, 0.421),
        (0.681, 0.657, 0.687, 0.628, 0.628, 0.685),
    ),
    "swd": (
        4,
        (0.606, 0.593, 0.541, 0.659, 0.556, 0.455),
        (0.572, 0.548, 0.584, 0.525, 0.577, 0.562),
    ),
}


def _toc_uco(dataset: str) -> ReferenceTable:
    classes, mae, qwk = _TOC_UCO[dataset]
    protocol = _TOC_UCO_PROTOCOL
    if dataset == "esl6":
        protocol += "; ESL regrouped to 6 classes (~{1,2,3}, 4, 5, 6, 7, {8,9})"
    return ReferenceTable(
        dataset=dataset,
        source="TOC-UCO",
        citation=_TOC_UCO_CITATION,
        protocol=protocol,
        num_classes=classes,
        split="holdout",
        repetitions=30,
        rows=_rows(
            ("mae", "qwk"),
            {m: (a, b) for m, a, b in zip(_TOC_UCO_METHODS, mae, qwk, strict=True)},
        ),
    )


_FGNET = ReferenceTable(
    dataset="fgnet",
    source="dlordinal",
    citation="dlordinal documentation, comparison of ordinal losses on FGNet",
    protocol="FGNet, 6 age groups, ImageNet-pretrained ResNet-18, 3 seeds; test MAE and QWK",
    num_classes=6,
    split="holdout",
    repetitions=3,
    rows=_rows(
        ("mae", "qwk"),
        {
            "best soft-label loss": (0.415, 0.870),
            "EMDLoss": (0.507, 0.824),
            "cross-entropy": (0.748, 0.647),
        },
    ),
)


def _coral(dataset: str, coral: float, ce: float) -> ReferenceTable:
    return ReferenceTable(
        dataset=dataset,
        source="CORAL",
        citation="Cao, Mirjalili & Raschka, CORAL (rank-consistent ordinal regression)",
        protocol="ResNet-34, 3 seeds; test MAE in years",
        num_classes=0,  # age in years, not a fixed class count we share
        split="holdout",
        repetitions=3,
        rows=_rows(("mae",), {"CORAL": (coral,), "cross-entropy": (ce,)}),
    )


#: Published tables per data set name (ours), in the order they are printed.
REFERENCE_TABLES: Mapping[str, tuple[ReferenceTable, ...]] = MappingProxyType(
    {
        "retinamnist": (_MEDMNIST, _MEDMNIST_PLUS),
        "era": (_toc_uco("era"),),
        "esl6": (_toc_uco("esl6"),),
        "lev": (_toc_uco("lev"),),
        "swd": (_toc_uco("swd"),),
        "fgnet": (_FGNET,),
        "morph2": (_coral("morph2", 2.64, 3.34),),
        "afad": (_coral("afad", 3.47, 3.59),),
        "cacd": (_coral("cacd", 5.25, 5.65),),
    }
)

# Data sets whose published rows are for a different version of the data: shown, flagged.
_RELATED = {"esl": "esl6"}


def reference_tables(dataset: str) -> tuple[ReferenceTable, ...]:
    """Published tables for a data set, including those for a regrouped version of it.

    For ``"esl"`` (9 classes) this returns TOC-UCO's ``esl6`` table; the caller should compare
    :attr:`ReferenceTable.num_classes` with its own class count and say that the protocols differ.

    Parameters
    ----------
    dataset : str
        Our data set name, e.g. ``"retinamnist"``, ``"era"``, ``"esl"``, ``"esl6"``. Names with
        no published rows (``"digits"``, ``"csv:..."``) give an empty tuple.

    Returns
    -------
    tuple of ReferenceTable

    Examples
    --------
    >>> [t.source for t in reference_tables("retinamnist")]
    ['MedMNIST v2', 'MedMNIST+']
    >>> reference_tables("esl")[0].num_classes
    6
    >>> reference_tables("digits")
    ()
    """
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a str, got {type(dataset).__name__}")
    key = dataset.lower()
    return REFERENCE_TABLES.get(key, REFERENCE_TABLES.get(_RELATED.get(key, ""), ()))
