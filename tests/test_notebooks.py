"""Every notebook runs top to bottom in small mode (KVCACHE_SMALL=1), shows its figures and saves them.

The notebooks are stored without outputs; this executes them in a fresh kernel with nbclient, as CI does."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# The figures each notebook must save (KVCACHE_FIGURES_DIR/<name>.png): a missing one fails the test.
FIGURES = {
    "01_cache_speedup.ipynb": {"generation_time", "speedup", "step_latency", "peers"},
    "02_memory_growth.ipynb": {"kv_memory", "kv_layers", "batch"},
    "03_smollm2.ipynb": {"smollm2_speedup", "smollm2_memory", "smollm2_bytes_per_step"},
    "04_cache_reuse.ipynb": {"reuse_conversation", "reuse_prefix_fanout"},
}
CELL_TIMEOUT_S = 300


def test_every_notebook_is_covered():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_is_stored_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before saving"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_in_small_mode(name, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setenv("KVCACHE_SMALL", "1")  # the kernel inherits the environment
    monkeypatch.setenv("KVCACHE_FIGURES_DIR", str(figures))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # raises on a failing cell

    images = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= len(FIGURES[name])
    assert {p.stem for p in figures.glob("*.png")} == FIGURES[name]
