"""US state and territory codes (USPS), from the `us` package's data."""

from __future__ import annotations

from functools import cache

import us


@cache
def _codes() -> dict[str, str]:
    return {key.lower(): state.abbr for state in us.states.STATES_AND_TERRITORIES for key in (state.abbr, state.name)}


def state_code(text: str) -> str | None:
    """The two-letter code of a state or territory written as its code or its full name, in any case; else None."""
    return _codes().get(" ".join(text.split()).lower())


def state_name(code: str) -> str:
    """The name of a state or territory given its USPS code ("IL" -> "Illinois"); the code itself if unknown."""
    state = us.states.lookup(code, field="abbr") if len(code) == 2 else None
    return state.name if state else code
