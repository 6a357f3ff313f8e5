"""The full run behind docs/benchmarks.md and the README's figures: every benchmark suite (JSON + CSV in
results/, figures in results/figures/), then the page itself. About 10 minutes on 2 cores (575 s in the recorded run).

    python benchmarks/run_all.py                 # full sizes, random-init GPT-2 124M
    python benchmarks/run_all.py --small         # tiny sizes, seconds (what CI runs through the notebooks)
    python benchmarks/run_all.py --model DIR     # a real checkpoint instead (other options: benchmarks/bench.py -h)
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_report  # noqa: E402  (beside this script)
from kvbench import bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--out", default=os.path.join(make_report.ROOT, "results"))
    parser.add_argument("--docs", default=os.path.join(make_report.ROOT, "docs", "benchmarks.md"))
    args, rest = parser.parse_known_args()  # the rest goes to `python benchmarks/bench.py all`
    bench.main(["all", "--out", os.path.relpath(args.out), *rest])
    make_report.main(["--results", args.out, "--out", args.docs])


if __name__ == "__main__":
    main()
