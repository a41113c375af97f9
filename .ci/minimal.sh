#!/usr/bin/env bash
# CI's second job (after `make test`): the package as a user installs it, at the declared floors.
#
# One fresh venv (python -m venv, nothing shared with .venv), in two stages:
#   A. minimal install: torch and numpy at their floors, then the built wheel WITHOUT extras.
#      Checks: a squared_emd value and gradient; `emdloss --help` and `--version` work and
#      `emdloss compare` says in one line to install `emdloss[train]`, never a traceback; the
#      doctests of the modules behind `emdloss.__all__`; the test suite with only pytest added
#      (core tests run, oracle/extra tests skip; tests/conftest.py fails a core module that
#      skips as a whole).
#   B. minimum versions: every dependency of the train, peers, ot, cpu-kernel and baselines extras pinned
#      to its floor (.ci/floors.py reads them from pyproject.toml), plus the test oracles, then
#      the test suite again without the slow end-to-end runs.
# torch's Linux wheels on PyPI are CUDA builds (~2.5 GB with the nvidia-* libraries, which
# `import torch` loads even on a CPU machine), so stage A's install is the long step.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3}
HOST_PY=${HOST_PY:-$ROOT/.venv/bin/python}  # has `packaging`, for .ci/floors.py
WORK=$(mktemp -d "${TMPDIR:-/tmp}/emdloss-ci.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
VENV=$WORK/venv
unset PYTHONPATH  # everything below must come from the installed wheel, never from src/
export PIP_DISABLE_PIP_VERSION_CHECK=1

T0=$SECONDS
step() {
    printf '\n== %s [%s, %d s into this job]\n' "$1" "$(date +%T)" "$((SECONDS - T0))"
}
# A failed check is recorded and the job goes on, so that one run reports every problem.
FAILED=()
fail() {
    echo "FAIL: $*"
    FAILED+=("$*")
}

step "build the wheel (pip wheel --no-deps, isolated build)"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/emdloss-*.whl)
echo "$WHEEL"

step "floors from pyproject.toml"
"$HOST_PY" .ci/floors.py > "$WORK/floors-core.txt"
"$HOST_PY" .ci/floors.py train peers ot cpu-kernel baselines > "$WORK/floors-all.txt"
cat "$WORK/floors-all.txt"

step "A. fresh venv: torch and numpy at their floors"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -c "$WORK/floors-core.txt" torch numpy

step "A. the wheel without extras"
"${PIP[@]}" install -q -c "$WORK/floors-core.txt" "$WHEEL"
"${PIP[@]}" check
"${PIP[@]}" list 2>/dev/null | grep -iE '^(torch|numpy|emdloss) '

step "A. the losses work on the minimal install"
"$VENV/bin/python" -I - <<'EOF' || fail "squared_emd on the minimal install"
import sys

import torch

import emdloss
from emdloss.functional import squared_emd

assert "site-packages" in emdloss.__file__, emdloss.__file__
assert "lightning" not in sys.modules, "import emdloss imported lightning"
# Hand value: p = (0.5, 0.3, 0.2), class 2: CDFs (0.5, 0.8, 1) vs (0, 0, 1), sum of squares 0.89,
# divided by C = 3 (the default normalisation).
p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
loss = squared_emd(p, torch.tensor([2]), input_type="probs")
assert abs(loss.item() - 0.89 / 3) < 1e-12, loss.item()
logits = torch.randn(8, 5, requires_grad=True)
emdloss.SquaredEMDLoss()(logits, torch.randint(0, 5, (8,))).backward()
assert logits.grad is not None and torch.isfinite(logits.grad).all()
print(f"emdloss {emdloss.__version__} on torch {torch.__version__}: squared_emd ok")
EOF

step "A. the emdloss command on the minimal install: help, version, a one-line error"
# Each output is checked for a traceback; a command that needs the train extra must say so in
# one line (exit status 2, as for any user error), and --help must name the extra too.
run_cli() {  # run_cli EXPECTED_STATUS ARGS...: sets OUT, records a failure on a wrong status
    local want=$1 status
    shift
    set +e
    OUT=$("$VENV/bin/emdloss" "$@" 2>&1)
    status=$?
    set -e
    printf '$ emdloss %s\n%s\n(exit status %d)\n' "$*" "$OUT" "$status"
    [ "$status" -eq "$want" ] || fail "emdloss $*: exit status $status, expected $want"
    if grep -q Traceback <<<"$OUT"; then fail "emdloss $*: printed a traceback"; fi
}
run_cli 0 --help
grep -qF 'emdloss[train]' <<<"$OUT" || fail "emdloss --help does not name emdloss[train]"
run_cli 0 --version
[ "$OUT" = "emdloss $(basename "$WHEEL" | cut -d- -f2)" ] || fail "emdloss --version: $OUT"
run_cli 2 compare
if ! grep -qF 'emdloss[train]' <<<"$OUT" || [ "$(grep -c . <<<"$OUT")" -ne 1 ]; then
    fail "emdloss compare on a minimal install must say in one line to install emdloss[train]"
fi

step "A. pytest (the only addition) and the doctests of the modules behind emdloss.__all__"
"${PIP[@]}" install -q pytest
# The root is lazy (PEP 562): touch every public name, then take the module files that loaded
# (files, not packages: a package argument would collect every module under it).
MODULES=$("$VENV/bin/python" -I -c "import sys, emdloss; [getattr(emdloss, n) for n in emdloss.__all__]
print(' '.join(sorted(m.__file__ for k, m in sys.modules.items()
                      if k.startswith('emdloss.') and not hasattr(m, '__path__'))))")
echo "$MODULES"
# shellcheck disable=SC2086  # one argument per module
(cd "$WORK" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider --doctest-modules $MODULES) ||
    fail "doctests on the minimal install"

step "A. the test suite on torch + numpy alone"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs tests || fail "tests on torch + numpy alone"

step "B. every extra's dependencies at their floors, plus the test oracles"
"${PIP[@]}" install -q -c "$WORK/floors-all.txt" "emdloss[train,peers,ot,cpu-kernel,baselines] @ file://$WHEEL"
"${PIP[@]}" install -q -c "$WORK/floors-all.txt" hypothesis scipy
"${PIP[@]}" check || fail "pip check at the floors"
"${PIP[@]}" list 2>/dev/null | grep -iE "^($(cut -d= -f1 "$WORK/floors-all.txt" | paste -sd'|')) "

step "B. the test suite at the minimum versions (without the slow end-to-end runs)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs -m "not slow" tests ||
    fail "tests at the minimum versions"

step "done"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'minimal/minimum-versions job: %d check(s) failed:\n' "${#FAILED[@]}"
    printf '  - %s\n' "${FAILED[@]}"
    exit 1
fi
echo "minimal/minimum-versions job: all checks passed"
