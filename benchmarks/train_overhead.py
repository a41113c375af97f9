"""Whole-process wall time of ``emdloss train`` against a plain PyTorch loop, side by side.

Both are timed from outside, as separate processes started by this script, so that imports,
data loading, training, evaluation, writing and interpreter teardown all count (what a user
waits for). The plain loop does the same work as ``emdloss train --dataset lev`` with its
defaults: the same data (``emdloss.data.load_dataset``) and MLP (``emdloss.models``), batch 64,
AdamW (lr 1e-3, weight decay 1e-4, exponential decay 0.995 per epoch), ``squared_emd``, one
torch thread, validation MAE every epoch, the best state kept and tested once. It writes nothing
and draws nothing: it is the yardstick of what the arithmetic and the imports cost.

The two commands run in turn (``emdloss``, plain, ``emdloss``, plain, ...), so that each pair
sees the same machine load; the ratio is taken pair by pair and its median printed. Run::

    python benchmarks/train_overhead.py [--rounds 5] [--dataset lev] [--epochs 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = "--plain-loop"  # the child mode: run the plain loop in this process


def plain_loop(dataset: str, epochs: int, batch_size: int, seed: int) -> float:
    """Train with a plain loop and return the test MAE of the best validation epoch."""
    import torch

    from emdloss.data import load_dataset
    from emdloss.functional import squared_emd
    from emdloss.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = load_dataset(dataset, seed=seed)

    def tensors(split: object) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(split[i][:2] for i in range(len(split))), strict=True)  # type: ignore[index, arg-type]
        return torch.stack(xs), torch.as_tensor(ys)

    (x, y), (xv, yv), (xt, yt) = (tensors(s) for s in (data.train, data.val, data.test))
    model = build_model("mlp", num_outputs=data.num_classes, input_shape=tuple(data.input_shape))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * 0.995**epoch
        model.train()
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            optimizer.zero_grad()
            squared_emd(model(x[batch]), y[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            mae = (model(xv).argmax(1) - yv).abs().float().mean().item()
        if mae < best:
            best, best_state = mae, {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    with torch.no_grad():
        return (model(xt).argmax(1) - yt).abs().float().mean().item()


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the operating system's account of the
    finished child) of one run of ``command``."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, command)
    return wall, usage.ru_utime + usage.ru_stime


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="pairs of runs (default 5)")
    parser.add_argument("--dataset", default="lev", help="tabular data set (default lev)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (emdloss train's default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(PLAIN, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_loop:
        mae = plain_loop(args.dataset, args.epochs, args.batch_size, seed=0)
        print(f"plain loop: test MAE {mae:.4f}")
        return 0
    python = sys.executable
    plain = [python, __file__, PLAIN, "--dataset", args.dataset, "--epochs", str(args.epochs)]
    plain += ["--batch-size", str(args.batch_size)]
    ours: list[tuple[float, float]] = []
    loop: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            run_dir = Path(tmp) / f"run{round_}"
            train = [python, "-m", "emdloss", "train", "--dataset", args.dataset, "--no-progress"]
            train += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
            ours.append(_timed([*train, "--output", str(run_dir)]))
            loop.append(_timed(plain))
            print(
                f"round {round_ + 1}: emdloss train {ours[-1][0]:.2f} s, plain loop "
                f"{loop[-1][0]:.2f} s, ratio {ours[-1][0] / loop[-1][0]:.2f} (wall)",
                flush=True,
            )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load:.1f} at the end, Python {platform.python_version()}; --dataset {args.dataset}, "
        f"{args.epochs} epochs, {args.rounds} pairs, whole process, median [min, max]"
    )
    print("| | emdloss train | plain loop | ratio (pair by pair) |")
    print("|---|---|---|---|")
    for index, what in enumerate(("wall s", "CPU s (user + sys)")):
        a = [run[index] for run in ours]
        b = [run[index] for run in loop]
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        print(f"| {what} | {_spread(a)} | {_spread(b)} | {_spread(ratios)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
