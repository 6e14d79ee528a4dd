"""Pydantic's validation errors in the words a client reads: where in the document, and what is wrong."""

from __future__ import annotations

from collections.abc import Sequence


def error_path(location: Sequence[int | str]) -> str:
    """`items[0].code` from pydantic's location tuple; "" for the document itself."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
