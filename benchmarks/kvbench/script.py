"""The command line every SmolLM2 measurement script shares: --small, --out results.json, --figures DIR."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Optional, Sequence


def script_main(doc: str, small_help: str, sizes: dict, run: Callable[[dict], dict],
                plot: Callable[[dict, Path], None], argv: Optional[Sequence[str]] = None) -> dict:
    """Parse the arguments, run(sizes["small" or "full"]), write the JSON and the figures asked for."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help=small_help)
    parser.add_argument("--out", default=None)
    parser.add_argument("--figures", default=None)
    args = parser.parse_args(argv)
    results = run(sizes["small" if args.small else "full"])
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if args.figures:
        plot(results, Path(args.figures))
    return results
