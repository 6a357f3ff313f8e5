"""The benchmark suites behind docs/benchmarks.md and results/: kvbench.bench's command line.

    python benchmarks/bench.py all --out results           # the full run (~10 min on 2 cores)
    python benchmarks/bench.py all --small --out /tmp/r    # tiny model, seconds (also: KVCACHE_SMALL=1)
    python benchmarks/bench.py plot --out results          # figures again from the JSON, nothing re-run
    python benchmarks/bench.py -h                          # every suite and option
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # kvbench lives beside this script

from kvbench.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
