"""Imports follow the layers and stay light: ``import emdloss`` and the CLI's parser, ``--help``
and ``--version`` import none of the heavy toolkit packages, and on a minimal install (torch and
numpy only) the command says in one line which extra to install (issue 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("lightning", "torchvision", "matplotlib", "torchmetrics", "sklearn", "PIL")


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _loaded(code: str) -> list[str]:
    done = _python(
        textwrap.dedent(code)
        + "\nimport json, sys\n"
        + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    assert done.returncode == 0, done.stderr
    return [name for name in json.loads(done.stdout.strip().splitlines()[-1])]


@pytest.mark.parametrize(
    "code",
    [
        "import emdloss",
        "import emdloss.training",
        "from emdloss.training import TrainConfig, LOSS_NAMES",
        "import emdloss.training.rundir",
        "import emdloss.compare",
    ],
)
def test_light_imports(code: str) -> None:
    loaded = _loaded(code)
    assert not [name for name in HEAVY if name in loaded], loaded


def test_cli_parser_help_and_version_import_no_heavy_package_nor_torch() -> None:
    for argv in (["--help"], ["--version"], ["train", "--help"], ["compare", "--help"]):
        code = f"""
            import contextlib, io
            from emdloss._cli_parser import build_parser
            from emdloss.cli import main
            build_parser()
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main({argv!r})
                except SystemExit as stop:
                    assert stop.code == 0, stop.code
        """
        loaded = _loaded(code)
        # torch too: starting the command must not pay for it (about 1-6 s on a loaded machine).
        assert not [name for name in (*HEAVY, "torch", "yaml") if name in loaded], (argv, loaded)


def test_help_lists_the_losses_from_the_light_registry() -> None:
    from emdloss.training import LOSS_NAMES as REGISTRY
    from emdloss.vocabulary import LOSS_NAMES

    assert LOSS_NAMES is REGISTRY
    done = subprocess.run(
        [sys.executable, "-m", "emdloss", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "losses: " + ", ".join(LOSS_NAMES) in " ".join(done.stdout.split())


# A minimal install: the train extra's modules cannot be imported (None in sys.modules is
# Python's own "not importable" marker, and find_spec reports it as missing).
_MINIMAL = """
import sys
for name in ("yaml", "lightning", "torchmetrics"):
    sys.modules[name] = None
from emdloss.cli import main
"""


def test_minimal_install_help_names_the_extra() -> None:
    done = _python(
        _MINIMAL
        + """
try:
        main(["--help"])
except SystemExit as stop:
    assert stop.code == 0
"""
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'emdloss[train]'" in " ".join(done.stdout.split())


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--loss", "ce"],
        ["evaluate", "somewhere"],
        ["predict", "somewhere", "x.csv"],
        ["compare", "--losses", "ce"],
    ],
)
def test_minimal_install_commands_say_which_extra_in_one_line(argv: list[str]) -> None:
    done = _python(_MINIMAL + f"\nraise SystemExit(main({argv!r}))\n")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'emdloss[train]'" in lines[0]


def test_minimal_install_losses_still_work() -> None:
    done = _python(
        _MINIMAL
        + """
import torch, emdloss
loss = emdloss.SquaredEMDLoss()(torch.zeros(2, 3), torch.tensor([0, 2]))
assert torch.isfinite(loss)
"""
    )
    assert done.returncode == 0, done.stderr


def test_lazy_root_keeps_every_public_name_and_submodule() -> None:
    code = """
import emdloss
for name in emdloss.__all__:
    getattr(emdloss, name)
for name in ("losses", "ground", "recipe", "decoding", "_ordinal", "_validation"):
    getattr(emdloss, name)
from emdloss import *
print("ok")
"""
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
