"""The client's Da Vinci CRD configuration for one call: which cards and actions it wants, in which CRD version."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds.protocol import HookRequest

TOPIC_SYSTEM_TEMP = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"  # card types in CRD 2.0.1 and 2.1
TOPIC_SYSTEM_2_2 = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
_VERSION = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class Configuration:
    """The client's `davinci-crd.configuration` and `requestedVersion`; values of the wrong type are ignored."""

    coverage_info: bool = True
    max_cards: int | None = None
    card_types_off: frozenset[str] = frozenset()
    requested_version: tuple[int, int] | None = None

    @classmethod
    def from_request(cls, request: HookRequest, defaults: Mapping[str, Any] | None = None) -> Configuration:
        """`defaults`: the values of the switches (booleans) the hook declares, for those the call leaves out."""
        switches = {code: value for code, value in (defaults or {}).items() if isinstance(value, bool)}
        options = {**switches, **request.configuration}
        max_cards = request.configuration.get("max-cards")
        version = _VERSION.fullmatch(request.requested_version or "")
        return cls(
            coverage_info=options.get("coverage-info") is not False,
            max_cards=max_cards if isinstance(max_cards, int) and not isinstance(max_cards, bool)
            and max_cards >= 0 else None,
            card_types_off=frozenset(code for code, value in options.items() if value is False),
            requested_version=(int(version[1]), int(version[2])) if version else None,
        )

    def shows(self, card_type: str) -> bool:
        return card_type not in self.card_types_off

    @property
    def topic_system(self) -> str:
        return TOPIC_SYSTEM_2_2 if self.requested_version and self.requested_version >= (2, 2) else TOPIC_SYSTEM_TEMP
