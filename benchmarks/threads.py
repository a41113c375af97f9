"""Intra-op threads for small models: one against two torch threads, idle and under load.

Times epochs of the default RetinaMNIST network (the small CNN, inputs 3x28x28, 5 classes,
1080 training images, batch 64, the ``emd2`` loss, AdamW) with ``torch.set_num_threads(t)``
for each ``t`` in ``--threads``, interleaved round by round so that every setting sees the same
machine load, once on the machine as it is and once with ``--load`` extra busy processes
(pure-Python spin loops, one core each) competing for the cores. Prints the median seconds per
epoch and the ratio of each thread count to one thread.

Small convolutions and matrix products split over several threads must wait for every thread at
the end of each operation; when another process holds a core, that wait is a scheduler time slice,
and an epoch of small operations collapses. Run::

    python benchmarks/threads.py [--rounds 5] [--threads 1,2] [--load 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from emdloss.models import build_model
from emdloss.training.losses import build_loss

SHAPE = (3, 28, 28)
NUM_CLASSES = 5
EPOCH_IMAGES = 1080  # RetinaMNIST's training split


def _epoch_runner(batch_size: int) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    loss = build_loss("emd2", NUM_CLASSES)
    model = build_model("cnn", num_outputs=loss.num_outputs, input_shape=SHAPE)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(EPOCH_IMAGES, *SHAPE)
    y = torch.randint(0, NUM_CLASSES, (EPOCH_IMAGES,))

    def epoch() -> None:
        for start in range(0, EPOCH_IMAGES, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            value = loss(model(xb), yb, None, None)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()

    return model, epoch


def _time_settings(threads: list[int], rounds: int, batch_size: int) -> dict[int, list[float]]:
    _, epoch = _epoch_runner(batch_size)
    epoch()  # warm-up: allocator, kernels
    times: dict[int, list[float]] = {t: [] for t in threads}
    for r in range(rounds):
        order = threads[r % len(threads) :] + threads[: r % len(threads)]
        for t in order:
            torch.set_num_threads(t)
            start = time.perf_counter()
            epoch()  # type: ignore[operator]
            times[t].append(time.perf_counter() - start)
    return times


def _start_load(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _stop_load(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per condition")
    parser.add_argument("--threads", default="1,2", help="thread counts to compare")
    parser.add_argument("--load", type=int, default=2, help="busy processes in the loaded run")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"torch {torch.__version__}, default {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.machine()}; cnn on {EPOCH_IMAGES} images "
        f"{SHAPE}, batch {args.batch_size}, {args.rounds} rounds"
    )
    print("\n| condition | threads | s/epoch (median) | min | max | vs 1 thread |")
    print("|---|---|---|---|---|---|")
    for load in (0, args.load):
        procs = _start_load(load)
        try:
            before = os.getloadavg()[0]
            times = _time_settings(threads, args.rounds, args.batch_size)
            after = os.getloadavg()[0]
        finally:
            _stop_load(procs)
        base = statistics.median(times[threads[0]])
        name = f"+{load} busy processes" if load else "as is"
        for t in threads:
            med = statistics.median(times[t])
            print(
                f"| {name} (load avg {before:.1f}->{after:.1f}) | {t} | {med:.3f} | "
                f"{min(times[t]):.3f} | {max(times[t]):.3f} | {med / base:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
