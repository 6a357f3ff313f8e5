"""The text the SmolLM2 measurements read: ../shared/text/tinyshakespeare.txt beside the checkout (public domain),
or, where a checkout has no such folder (a CI machine), a stand-in that lets the scripts run but measures nothing
worth reporting: the results name which one was read."""

from __future__ import annotations

from pathlib import Path

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "text" / "tinyshakespeare.txt"
_STAND_IN = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
             "First Citizen:\nYou are all resolved rather to die than to famish?\n\n")


def shakespeare(n_chars: int) -> str:
    """The first n_chars characters of tinyshakespeare.txt, or of the stand-in repeated (text_name() says which)."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:n_chars]
    return (_STAND_IN * (n_chars // len(_STAND_IN) + 1))[:n_chars]


def text_name() -> str:
    return SHAKESPEARE.name if SHAKESPEARE.is_file() else "a repeated stand-in (tinyshakespeare.txt not found)"
