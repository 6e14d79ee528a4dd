"""CDS Hooks 2.0 wire models: the service request, cards and actions, and feedback."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from cds.errors import BadRequest, quote
from cds.fhir import DraftOrder, parse_draft_order, prune_empty
from cds.fhirjson import ID_PATTERN, REFERENCE_PATTERN
from cds.validation import error_path
from cds.web.body import json_type

USER_ID_PATTERN = re.compile(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
MAX_SUMMARY = 139  # the spec says "<140 characters"


# ---------------------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class FhirAuthorization:
    access_token: str | None = field(repr=False)  # None: sent empty or blank, which is no token (an open server)
    token_type: str
    scope: str
    subject: str
    expires_in: int | None = None
    patient: str | None = None


@dataclass(frozen=True)
class ContextShape:
    """What a hook's context holds, as its hook definition says: `orders_in`, the names (current first, then older
    spellings) of the field holding a Bundle of the resources the hook judges (None: it holds none); whether
    `userId` and `encounterId` are required."""

    orders_in: tuple[str, ...] | None = ("draftOrders",)
    requires_user: bool = True
    requires_encounter: bool = False


@dataclass(frozen=True)
class HookRequest:
    """A validated service call. Draft orders (or the resources the hook's context carries in their place, such as
    appointments) are parsed one by one; prefetch values are kept as sent, and the context too, for the fields a
    hook reads itself."""

    hook: str
    hook_instance: str
    user_id: str | None
    patient_id: str
    draft_orders: tuple[DraftOrder, ...]
    selections: tuple[str, ...] = ()
    encounter_id: str | None = None
    fhir_server: str | None = None
    fhir_authorization: FhirAuthorization | None = None
    prefetch: dict[str, Any] = field(default_factory=dict)
    extension: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def configuration(self) -> dict[str, Any]:
        """The client's `davinci-crd.configuration` choices (empty when absent or malformed)."""
        value = self.extension.get("davinci-crd.configuration")
        return value if isinstance(value, dict) else {}

    @property
    def requested_version(self) -> str | None:
        """`davinci-crd.requestedVersion` as sent; a value that is not a string as text (2.2 sent as a number is
        "2.2"), so that it is checked rather than ignored."""
        value = self.extension.get("davinci-crd.requestedVersion")
        return value if isinstance(value, str) or value is None else str(value)


def parse_hook_request(body: dict[str, Any], requires_selections: bool, max_orders: int,
                       shape: ContextShape = ContextShape()) -> HookRequest:
    """Check a service call against CDS Hooks 2.0 and the hook's context (`shape`); lenient where clients are."""
    hook = _string(body, "hook")
    hook_instance = _string(body, "hookInstance", max_length=128)
    fhir_server = _fhir_server(body.get("fhirServer"))
    authorization = _fhir_authorization(body.get("fhirAuthorization"))
    if authorization and not fhir_server:
        raise BadRequest("fhirServer is required when fhirAuthorization is given.", "fhirServer", "required")
    context = body.get("context")
    if not isinstance(context, dict):
        raise BadRequest(_expected("context", "an object", context), "context", _missing_or_invalid(context))
    user_id = context.get("userId")
    if user_id is not None or shape.requires_user:
        user_id = _string(context, "userId", "context.userId", USER_ID_PATTERN, "Practitioner/123")
    patient_id = _string(context, "patientId", "context.patientId", ID_PATTERN, "an id such as 123")
    encounter_id = context.get("encounterId")
    if encounter_id is not None or shape.requires_encounter:
        encounter_id = _string(context, "encounterId", "context.encounterId", ID_PATTERN, "an id such as 987")
    orders: tuple[DraftOrder, ...] = ()
    if shape.orders_in:
        name = next((name for name in shape.orders_in if name in context), shape.orders_in[0])
        orders = _draft_orders(context.get(name), max_orders, f"context.{name}")
    selections = _selections(context.get("selections"), orders) if requires_selections else ()
    return HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        user_id=user_id,
        patient_id=patient_id,
        encounter_id=encounter_id,
        draft_orders=orders,
        selections=selections,
        fhir_server=fhir_server,
        fhir_authorization=authorization,
        prefetch=_object(body, "prefetch", values="an object or null"),
        extension=_object(body, "extension"),
        context=context,
    )


def context_references(request: HookRequest, names: tuple[str, ...], max_count: int) -> tuple[tuple[str, str], ...]:
    """A required context field holding an array of `Type/id` references (the first of `names` present: the current
    spelling, then older ones), with where each is named; 400 when it is missing or malformed."""
    name = next((name for name in names if name in request.context), names[0])
    path = f"context.{name}"
    value = request.context.get(name)
    if isinstance(value, str):  # one reference sent as a string
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest(_expected(path, "a non-empty array of references", value), path, _missing_or_invalid(value))
    if len(value) > max_count:
        raise BadRequest(f"{path} holds {len(value)} references; at most {max_count} are accepted.", path,
                         "too-costly")
    for index, reference in enumerate(value):
        if not isinstance(reference, str) or not REFERENCE_PATTERN.fullmatch(reference):
            raise BadRequest(f"{path}[{index}] must be a reference such as DeviceRequest/123.", f"{path}[{index}]")
    named: dict[str, str] = {}
    for index, reference in enumerate(value):
        named.setdefault(reference, f"{path}[{index}]")  # a reference named twice is judged once
    return tuple(named.items())


def context_reference(request: HookRequest, name: str) -> str:
    """A required context field holding one `Type/id` reference (e.g. order-dispatch's performer); 400 otherwise."""
    return _string(request.context, name, f"context.{name}", REFERENCE_PATTERN, "Organization/123")


def _missing_or_invalid(value: Any) -> str:
    return "required" if value is None else "invalid"


def _expected(path: str, what: str, value: Any) -> str:
    if value is None:
        return f"{path} is required and must be {what}."
    if isinstance(value, str) and not value.strip():
        return f"{path} must be {what}, not an empty or blank string."
    return f"{path} must be {what}, not {json_type(value)}."


def _string(
    obj: dict[str, Any],
    key: str,
    path: str | None = None,
    pattern: re.Pattern[str] | None = None,
    example: str = "",
    max_length: int = 1024,
) -> str:
    path = path or key
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(_expected(path, "a non-empty string", value), path, _missing_or_invalid(value))
    if len(value) > max_length or (pattern and not pattern.fullmatch(value)):
        hint = f" ({example})" if example else ""
        raise BadRequest(f"{path} {quote(value)} is not well-formed{hint}.", path)
    return value


def _object(body: dict[str, Any], key: str, values: str | None = None) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(_expected(key, "an object", value), key)
    if values:
        for name, item in value.items():
            if item is not None and not isinstance(item, dict):
                raise BadRequest(f"{key}.{name} must be {values}, not {json_type(item)}.", f"{key}.{name}")
    return value


def _fhir_server(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(_expected("fhirServer", "an absolute URL", value), "fhirServer")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BadRequest(f"fhirServer {quote(value)} is not an absolute http(s) base URL.", "fhirServer")
    return value.rstrip("/")


def _fhir_authorization(value: Any) -> FhirAuthorization | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(_expected("fhirAuthorization", "an object", value), "fhirAuthorization")
    fields = {
        name: _string(value, name, f"fhirAuthorization.{name}", max_length=16384)
        for name in ("token_type", "scope", "subject")
    }
    token = value.get("access_token")
    if not isinstance(token, str):  # an empty or blank token is no token: what clients of open servers send
        raise BadRequest(_expected("fhirAuthorization.access_token", "a string", token),
                         "fhirAuthorization.access_token", _missing_or_invalid(token))
    if len(token) > 16384:
        raise BadRequest("fhirAuthorization.access_token is longer than 16384 characters.",
                         "fhirAuthorization.access_token")
    if fields["token_type"].lower() != "bearer":
        raise BadRequest("fhirAuthorization.token_type must be Bearer.", "fhirAuthorization.token_type")
    expires_in = value.get("expires_in")  # tolerated when missing, as some clients omit it
    if expires_in is not None and (not isinstance(expires_in, int) or isinstance(expires_in, bool)):
        raise BadRequest("fhirAuthorization.expires_in must be a number of seconds.", "fhirAuthorization.expires_in")
    patient = value.get("patient")
    return FhirAuthorization(
        access_token=token.strip() or None, **fields, expires_in=expires_in,
        patient=patient if isinstance(patient, str) else None,
    )


def _draft_orders(bundle: Any, max_orders: int, path: str) -> tuple[DraftOrder, ...]:
    if isinstance(bundle, list):  # the resources sent as a bare array, as an old appointment-book example does
        bundle = {"resourceType": "Bundle", "entry": [{"resource": item} for item in bundle]}
    if not isinstance(bundle, dict):
        raise BadRequest(_expected(path, "a FHIR Bundle", bundle), path, _missing_or_invalid(bundle))
    if bundle.get("resourceType") != "Bundle":
        raise BadRequest(f"{path}.resourceType must be Bundle.", f"{path}.resourceType")
    entries = bundle.get("entry") or []
    if isinstance(entries, dict):  # one entry sent as an object
        entries = [entries]
    if not isinstance(entries, list):
        raise BadRequest(_expected(f"{path}.entry", "an array", entries), f"{path}.entry")
    if len(entries) > max_orders:
        raise BadRequest(f"{path} holds {len(entries)} entries; at most {max_orders} are accepted.",
                         f"{path}.entry", "too-costly")
    orders = []
    for index, entry in enumerate(entries):
        where = f"{path}.entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise BadRequest(_expected(f"{where}.resource", "a FHIR resource", resource), f"{where}.resource")
        if not isinstance(resource.get("resourceType"), str) or not resource["resourceType"].isalpha():
            raise BadRequest(f"{where}.resource.resourceType is missing or not a resource type.",
                             f"{where}.resource.resourceType")
        orders.append(parse_draft_order(resource))
    return tuple(orders)


def _selections(value: Any, orders: tuple[DraftOrder, ...]) -> tuple[str, ...]:
    path = "context.selections"
    if isinstance(value, str):  # one selection sent as a string
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest(_expected(path, "a non-empty array of references", value), path, _missing_or_invalid(value))
    known = {order.reference for order in orders}
    for index, selection in enumerate(value):
        if not isinstance(selection, str) or not REFERENCE_PATTERN.fullmatch(selection):
            raise BadRequest(f"{path}[{index}] must be a reference such as ServiceRequest/123.", f"{path}[{index}]")
        if selection not in known:
            raise BadRequest(f"{path}[{index}] {quote(selection)} is not among context.draftOrders.",
                             f"{path}[{index}]")
    return tuple(value)


# --------------------------------------------------------------------------------------------- response


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Coding(WireModel):
    system: str
    code: str
    display: str | None = None


class Source(WireModel):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Link(WireModel):
    label: str
    url: str
    type: Literal["absolute", "smart"] = "absolute"
    app_context: str | None = None


class Action(WireModel):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resource_id: str | None = None


class Suggestion(WireModel):
    label: str
    uuid: str
    is_recommended: bool | None = None
    actions: list[Action] = []


class Card(WireModel):
    uuid: str
    summary: str
    indicator: Literal["info", "warning", "critical"]
    source: Source
    detail: str | None = None
    suggestions: list[Suggestion] = []
    selection_behavior: Literal["at-most-one", "any"] | None = None
    override_reasons: list[Coding] = []
    links: list[Link] = []
    extension: dict[str, Any] | None = None

    @field_validator("summary")
    @classmethod
    def _short_summary(cls, value: str) -> str:
        return value if len(value) <= MAX_SUMMARY else value[: MAX_SUMMARY - 1].rstrip() + "…"

    @model_validator(mode="after")
    def _selection_behavior_with_suggestions(self) -> Card:
        if self.suggestions and not self.selection_behavior:
            raise ValueError("selectionBehavior is required when a card has suggestions")
        if any(not reason.display for reason in self.override_reasons):
            raise ValueError("every override reason needs a display")
        return self


class CdsResponse(WireModel):
    cards: list[Card] = []
    system_actions: list[Action] = []


def to_wire(response: CdsResponse) -> dict[str, Any]:
    """The JSON a client gets: no null and no empty optional member anywhere, but `cards` always."""
    data = prune_empty(response.model_dump(by_alias=True, exclude_none=True))
    data.setdefault("cards", [])
    return data


# --------------------------------------------------------------------------------------------- feedback


class FeedbackModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class AcceptedSuggestion(FeedbackModel):
    id: str = Field(min_length=1)


class ReasonCoding(FeedbackModel):
    """An override reason as clients send it; the sandbox leaves out `display`."""

    code: str = Field(min_length=1)
    system: str | None = None
    display: str | None = None


class OverrideReason(FeedbackModel):
    reason: ReasonCoding | None = None
    user_comment: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat_pre_2_0_form(cls, value: Any) -> Any:
        if isinstance(value, dict) and "code" in value and "reason" not in value:
            return {"reason": value}
        return value


class FeedbackItem(FeedbackModel):
    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    accepted_suggestions: list[AcceptedSuggestion] = []
    override_reason: OverrideReason | None = None
    outcome_timestamp: datetime

    @model_validator(mode="after")
    def _accepted_names_its_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.accepted_suggestions:
            raise ValueError("acceptedSuggestions is required when outcome is accepted")
        return self


class Feedback(FeedbackModel):
    feedback: list[FeedbackItem] = Field(min_length=1)


def parse_feedback(body: dict[str, Any]) -> Feedback:
    try:
        return Feedback.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = error_path(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise BadRequest(f"Invalid feedback at {path or 'body'}: {message}.", path or None) from None
