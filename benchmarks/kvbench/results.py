"""Benchmark results on disk: a Suite (records with the machine and parameters they were measured with), saved
as JSON (everything) and CSV (one flat row per record), and read back into the same dataclasses to re-plot
without re-running."""

from __future__ import annotations

import csv
import json
import os
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Dict

from .engine_benchmarks import SpeedupRow
from .kv_memory import KVMemoryProfile
from .timing import GenerationRecord


@dataclass
class Suite:
    """One benchmark's results with everything needed to read and re-plot them without re-running."""
    name: str                 # "speedup", "batch", "peers" or "memory"
    machine: dict             # describe_machine() + the probes
    params: dict              # sizes, model, prompt: how the run was made
    records: list
    notes: dict = field(default_factory=dict)


RECORD_TYPES = {"speedup": SpeedupRow, "batch": GenerationRecord, "peers": GenerationRecord,
                "memory": KVMemoryProfile}


def _from_dict(cls, data: dict):
    """A dataclass from its asdict() form, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _from_dict(hints[f.name], data[f.name]) if is_dataclass(hints[f.name])
                  else data[f.name] for f in fields(cls) if f.name in data})


def _flatten(record, prefix: str = "") -> dict:
    """One CSV row: nested records become dotted columns; lists (per-step latencies) stay in the JSON only."""
    row = {}
    for key, value in (asdict(record) if is_dataclass(record) else record).items():
        if isinstance(value, dict):
            row.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            row[prefix + key] = value
    return row


def save_suite(suite: Suite, out_dir: str) -> str:
    """<out_dir>/<name>.json (everything) and <name>.csv (one row per record, no per-step lists)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{suite.name}.json")
    with open(path, "w") as f:
        json.dump({"name": suite.name, "machine": suite.machine, "params": suite.params, "notes": suite.notes,
                   "records": [asdict(r) for r in suite.records]}, f, indent=1)
    rows = [_flatten(r) for r in suite.records]
    with open(os.path.join(out_dir, f"{suite.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def load_suite(path: str) -> Suite:
    with open(path) as f:
        data = json.load(f)
    record_type = RECORD_TYPES[data["name"]]
    return Suite(data["name"], data["machine"], data["params"], [_from_dict(record_type, r) for r in data["records"]],
                 data.get("notes", {}))


def load_results(out_dir: str) -> Dict[str, Suite]:
    """Every suite saved under out_dir, by name (the ones not run are absent)."""
    return {name: load_suite(os.path.join(out_dir, f"{name}.json")) for name in RECORD_TYPES
            if os.path.isfile(os.path.join(out_dir, f"{name}.json"))}
