"""Sphinx configuration of the emdloss documentation site (``make docs``).

Sphinx + autodoc + numpydoc read the numpydoc docstrings, whose math (``.. math::``,
``:math:``) and cross-references are reStructuredText; MyST reads the Markdown guides;
sphinx-gallery runs ``docs/examples/*.py`` at build time and embeds their output. The build is
strict (``-W -n`` in the Makefile): every warning, and every reference to an emdloss name that
does not exist, fails it. Nothing is fetched from the network (no intersphinx), so references to
other projects' names are listed in ``nitpick_ignore_regex`` below.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# Examples run on the CPU with few threads, quietly and reproducibly.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import emdloss  # noqa: E402

project = "emdloss"
author = "emdloss developers"
copyright = "emdloss developers, MIT License"
release = version = emdloss.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "examples/README.rst",
    "**/*.ipynb",
    "auto_examples/*.py",
    "sg_execution_times.rst",
    "auto_examples/sg_execution_times.rst",
]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"emdloss {release}"
# MathJax is loaded from its CDN by the browser; the build itself needs no network.

# -- autodoc / numpydoc -------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": False,
    # scikit-learn's generated metadata-routing setters
    "exclude-members": "set_fit_request,set_score_request,set_predict_request,set_predict_proba_request",
}
# Lightning's docstrings of the hooks a class overrides are Lightning's, not ours.
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
numpydoc_class_members_toctree = False

# -- MyST ---------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# -- sphinx-gallery -----------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",  # run every example (not only plot_*.py)
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "plot_gallery": "True",
    "show_memory": False,
    "reset_modules": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
}

# -- strictness ---------------------------------------------------------------------------------
nitpicky = True
# Names of other projects (no intersphinx: the build is offline) and numpydoc's type phrases.
nitpick_ignore_regex = [
    # private helpers (a leading underscore) are deliberately not in the reference
    ("py:.*", r"(.*\.)?_[A-Za-z].*"),
    (
        "py:.*",
        r"(torch|numpy|np|nn|lightning|sklearn|transformers|onnx|onnxruntime|PIL|scipy|matplotlib|pandas|torchmetrics|collections|contextvars|typing|pathlib|os|argparse|warnings)(\..*)?",
    ),
    (
        "py:.*",
        r"(Tensor|LongTensor|Module|Path|Figure|Axes|ndarray|DataFrame|Dataset|Callable|Sequence|Mapping|Iterable|Any|Literal)",
    ),
]
# Short names in modules that only import them (training.run, training.rundir, metrics.baselines).
nitpick_ignore = [
    ("py:class", "OrdinalTask"),
    ("py:class", "TrainConfig"),
    ("py:class", "OrdinalMetrics"),
    ("py:data", "CURVE_ALPHAS"),  # a constant of the private emdloss.training._calibrate
]
suppress_warnings = ["myst.header"]


def _keep_public_constants(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    """Document module constants such as ``MODEL_NAMES`` even without a doc comment."""
    if skip and what == "module" and name.isupper() and not name.startswith("_"):
        return False
    return None


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _keep_public_constants)  # type: ignore[attr-defined]
