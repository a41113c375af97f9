"""Write a synthetic CSV with the structure of the `wine` data of the R package `ordinal`.

The real data (Randall 1989: 72 bitterness ratings of wine, 9 judges x 8 bottles) is not shipped
here, so this script synthesises a table with the same columns and the same traps for a newcomer:
`rownames` (an identifier), `response` (the score the 1-5 `rating` is binned from: a perfect
leak), `judge` and `bottle` (integer codes of categories), `temp` and `contact` (the two
factors; `bottle` is nested in them, as in the original) and a constant `batch`. The numbers
are made up: seeded normal noise around effects of the size of the original's. Used by the
CSV walk-through of docs/training.md::

    python scripts/make_wine_like.py wine.csv [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def wine_like(seed: int = 0) -> list[str]:
    """The CSV lines (header first) of the synthetic wine table."""
    rng = np.random.default_rng(seed)
    judge_effect = rng.normal(0.0, 4.0, 9)
    lines = ["rownames,response,rating,temp,contact,bottle,judge,batch"]
    row = 0
    for judge in range(1, 10):
        for bottle in range(1, 9):
            temp = "warm" if bottle > 4 else "cold"
            contact = "yes" if (bottle - 1) % 4 >= 2 else "no"
            response = (
                30.0
                + 14.0 * (temp == "warm")
                + 7.0 * (contact == "yes")
                + judge_effect[judge - 1]
                + rng.normal(0.0, 5.0)
            )
            rating = int(np.digitize(response, [25.0, 35.0, 45.0, 55.0])) + 1
            row += 1
            lines.append(f"{row},{response:.1f},{rating},{temp},{contact},{bottle},{judge},B1")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(wine_like(args.seed)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
