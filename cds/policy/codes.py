"""Code systems as clients send them, normalised to the names policies use; term patterns for text matching."""

from __future__ import annotations

import re
from collections.abc import Iterable

CPT = "CPT"
HCPCS = "HCPCS"

# Every spelling seen in the wild (domain reference §2.3), by normalised name.
_SYSTEMS = {
    "http://www.ama-assn.org/go/cpt": CPT,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.cms.gov/medicare/coding/hcpcsreleasecodesets": HCPCS,
    "https://www.cms.gov/medicare/coding/hcpcsreleasecodesets": HCPCS,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,
    "urn:oid:2.16.840.1.113883.6.14": HCPCS,  # HCPCS, all levels
    "https://bluebutton.cms.gov/resources/codesystem/hcpcs": HCPCS,
    "http://bluebutton.cms.gov/resources/codesystem/hcpcs": HCPCS,
}

def code_system(uri: object) -> str | None:
    """CPT, HCPCS, "" for a coding without a system, or None for any other system."""
    if uri is None or (isinstance(uri, str) and not uri.strip()):
        return ""
    if not isinstance(uri, str):
        return None
    return _SYSTEMS.get(uri.strip().rstrip("/").lower())


def normalise_code(code: object) -> str | None:
    return code.strip().upper() if isinstance(code, str) and code.strip() else None


def code_in(code: str, ranges: Iterable[str]) -> bool:
    """Whether a code is one of, or within one of, codes and inclusive ranges such as "E0200-E0249"."""
    for entry in ranges:
        low, _, high = entry.partition("-")
        if code == low or (high and len(code) == len(low) and low <= code <= high):
            return True
    return False


def terms_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for all terms: case-insensitive, on word boundaries, a space or hyphen matching either or none.

    Longer terms come first so a match reports the most specific term ("Anodyne therapy", not "Anodyne").
    """
    parts = [_term_regex(term) for term in sorted(set(terms), key=len, reverse=True)]
    if not parts:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(parts) + r")(?![a-z0-9])", re.IGNORECASE)


def _term_regex(term: str) -> str:
    words = [re.escape(word) for word in re.split(r"[\s\-]+", term.strip()) if word]
    return r"[\s\-]*".join(words)
