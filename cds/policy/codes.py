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


# A five-character CPT or HCPCS code followed by up to four two-character modifiers ("E0221-RR", "97026 GP",
# "E0221NURR"): the code is what a policy lists, the modifiers only qualify it.
_MODIFIED = re.compile(r"([A-Z0-9]{5})((?:[\s\-:]?[A-Z0-9]{2}){1,4})")


def normalise_code(code: object) -> str | None:
    return code.strip().upper() if isinstance(code, str) and code.strip() else None


def split_modifiers(code: str) -> tuple[str, tuple[str, ...]]:
    """A normalised code and the modifiers appended to it, if any: "E0221-RR" -> ("E0221", ("RR",))."""
    found = _MODIFIED.fullmatch(code)
    if not found:
        return code, ()
    modifiers = re.sub(r"[\s\-:]", "", found[2])
    return found[1], tuple(modifiers[i:i + 2] for i in range(0, len(modifiers), 2))


def code_in(code: str, ranges: Iterable[str]) -> bool:
    """Whether a code is one of, or within one of, codes and inclusive ranges such as "E0200-E0249"."""
    for entry in ranges:
        low, _, high = entry.partition("-")
        if len(code) == len(low) and low <= code <= (high or low):
            return True
    return False


def terms_pattern(terms: Iterable[str], acronyms_in_capitals: bool = True) -> re.Pattern[str] | None:
    """One regex for all terms, on word boundaries: a space or hyphen in a term matches one or more spaces or
    hyphens (never nothing: "infra red" does not match "infrared"); a word written in capitals (an acronym such as
    MIRE or NIR) matches only in capitals (unless `acronyms_in_capitals` is off, as for negatives, which are better
    over-matched), any other word in any case.

    Longer terms come first so a match reports the most specific term ("Anodyne therapy", not "Anodyne").
    """
    parts = [_term_regex(term, acronyms_in_capitals) for term in sorted(set(terms), key=len, reverse=True)]
    if not parts:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(parts) + r")(?![a-z0-9])", re.IGNORECASE)


def _term_regex(term: str, acronyms_in_capitals: bool) -> str:
    words = [word for word in re.split(r"[\s\-]+", term.strip()) if word]
    return r"[\s\-]+".join(f"(?-i:{re.escape(word)})" if acronyms_in_capitals and _acronym(word) else re.escape(word)
                            for word in words)


def _acronym(word: str) -> bool:
    return len(word) > 1 and word.isupper()
