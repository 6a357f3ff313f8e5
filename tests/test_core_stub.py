"""The typing stub of the C++ module (python/kvcache/_core.pyi, shipped with py.typed) names exactly what the module
has: every public function, class, method and property, and each function's keyword arguments; so that a binding
added or renamed without regenerating the stub fails here."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import kvcache
from kvcache import _core

PACKAGE = Path(kvcache.__file__).parent  # the installed package (not resolved: its files may be links)
SOURCE = Path(__file__).resolve().parents[1] / "python" / "kvcache"


def stub_tree() -> ast.Module:
    return ast.parse((SOURCE / "_core.pyi").read_text())


def public(names):
    return {n for n in names if not n.startswith("_")}


def stub_members():
    tree = stub_tree()
    top = {node.name: node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    top.update({t.target.id: t for t in tree.body if isinstance(t, ast.AnnAssign) and isinstance(t.target, ast.Name)})
    return top


def runtime_keywords(fn) -> set:
    """The keywords of a pybind11 function, from its first signature line (name(arg: type = default, ...))."""
    first = (fn.__doc__ or "").splitlines()[0]
    return set(re.findall(r"(\w+): ", first.split("(", 1)[1])) - {"self"}


def test_the_stub_and_its_marker_are_installed():
    assert (PACKAGE / "_core.pyi").is_file() and (PACKAGE / "py.typed").is_file()


def test_every_public_name_of_the_module_is_in_the_stub():
    members = stub_members()
    assert public(dir(_core)) == public(members), "run tools/write_core_stub.py"


@pytest.mark.parametrize("name", sorted(n for n in public(dir(_core)) if inspect.isclass(getattr(_core, n))))
def test_every_member_of_each_class_is_in_the_stub(name):
    node = stub_members()[name]
    in_stub = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
    cls = getattr(_core, name)
    own = {n for n in vars(cls) if not n.startswith("_")}
    assert own == public(in_stub), f"{name}: run tools/write_core_stub.py"


@pytest.mark.parametrize("name", sorted(n for n in public(dir(_core)) if callable(getattr(_core, n))
                                        and not inspect.isclass(getattr(_core, n))))
def test_each_function_keywords_match(name):
    node = stub_members()[name]
    args = node.args
    in_stub = {a.arg for a in args.args + args.kwonlyargs}
    assert runtime_keywords(getattr(_core, name)) == in_stub
