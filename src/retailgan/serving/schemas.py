"""Request and response bodies of the HTTP API.

Request bodies are strict: unknown fields, numbers sent as strings or booleans, and booleans sent
as numbers or strings are refused. Ids (:data:`Id`, in bodies and paths alike) may carry leading
and trailing ASCII spaces, tabs and line breaks, which are trimmed; an id of only those is refused.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from retailgan.data.reftime import FUTURE_SLACK
from retailgan.data.schemas import PADDING

MAX_K = 100
MAX_LIST = 1000
"""Longest exclude / candidate list."""
MAX_SESSION = 200
"""Longest ad-hoc product list."""
MAX_EVENTS = 100
"""Most events per ``POST /v1/events``."""

Id = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"[^ \t\n\r\f\v]"),
    AfterValidator(lambda s: s.strip(PADDING)),
]
"""1-64 characters, at least one of them not padding; the length counts the padding."""

TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)
"""Event times: ISO 8601 date and time, optional seconds and offset ([0-9], not \\d, which is Unicode in Python)."""


def _iso_time(value: Any) -> Any:
    # pydantic alone also takes numbers and digit strings as Unix times ("ts": 0 is 1970).
    if not isinstance(value, str) or not TIME.match(value):
        raise ValueError("expected an ISO 8601 date and time, e.g. 2011-12-09T12:50:00Z")
    return value


def _as_utc(ts: datetime | None) -> datetime | None:
    return ts.replace(tzinfo=timezone.utc) if ts is not None and ts.tzinfo is None else ts


UtcTime = Annotated[datetime, AfterValidator(_as_utc)]
"""A time sent with its offset (the store keeps UTC without a zone)."""


class Strict(BaseModel):
    """Response bodies."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Body(BaseModel):
    """Request bodies (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")


class FieldError(Strict):
    field: str = Field(description="Dotted location, e.g. events.0.ts or query.limit.")
    message: str
    type: str


class ErrorOut(Strict):
    detail: str = Field(description="One line saying what was wrong.")
    errors: list[FieldError] | None = Field(default=None, description="Each invalid field (422 only).")


class Filters(Body):
    categories: list[Id] | None = Field(
        default=None, max_length=50, description="Keep only products in one of these categories."
    )
    max_price: float | None = Field(
        default=None, ge=0, strict=True, description="Keep only products priced at most this."
    )


ONE_SUBJECT = {"oneOf": [
    {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}, "product_ids": {"type": "null"}}},
    {"required": ["product_ids"], "properties": {"product_ids": {"type": "array"}, "customer_id": {"type": "null"}}},
]}
"""Exactly one of customer_id or product_ids (the other absent or null)."""


class RecommendationRequest(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=ONE_SUBJECT)

    customer_id: Id | None = Field(default=None, description="A customer id (known or not).")
    product_ids: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SESSION,
        description="An ad-hoc session (products viewed or bought) for a customer without an id.",
    )
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True)
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_LIST, description="Never recommend these.")
    candidates: list[Id] | None = Field(
        default=None, min_length=1, max_length=MAX_LIST, description="Recommend only among these."
    )
    filters: Filters | None = None
    exclude_seen: bool = Field(default=True, strict=True, description="Leave out products already in the history.")
    explain: bool = Field(default=False, strict=True, description="Add the reasons for each product.")
    diversity: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        strict=True,
        description="Re-rank for variety: 0 keeps the model's order; higher values trade relevance for "
        "products less alike (in the model's product space, else by shared customers).",
    )
    diversify: Literal["mmr", "dpp"] = Field(
        default="mmr", description="How: maximal marginal relevance, or a determinantal point process."
    )

    @model_validator(mode="after")
    def _one_subject(self) -> RecommendationRequest:
        if (self.customer_id is None) == (self.product_ids is None):
            raise ValueError("give exactly one of customer_id or product_ids")
        return self


class Reason(Strict):
    kind: Literal["history_item", "popular", "model"]
    text: str
    product_id: str | None = None
    title: str | None = None
    contribution: float | None = None


class RecommendedProduct(Strict):
    rank: int
    product_id: str
    title: str | None
    category: str | None
    price: float | None
    score: float
    image_url: str | None = Field(default=None, description="The product image (GET, no key needed), if any.")
    image_generated: bool | None = Field(
        default=None, description="true: the image was generated (served with a visible label); false: a photo."
    )
    reasons: list[Reason] | None = None


class RecommendationResponse(Strict):
    customer_id: str | None
    known_customer: bool
    strategy: Literal["model", "fold-in", "session", "popular"]
    history_size: int
    model_version: str
    items: list[RecommendedProduct]
    notes: list[str] = Field(default_factory=list)


class ProductOut(Strict):
    product_id: str
    title: str | None
    category: str | None
    price: float | None
    in_model: bool
    customers: int | None = Field(description="Customers who bought it in the model's training data.")
    image_url: str | None = Field(default=None, description="The product image (GET, no key needed), if any.")
    image_generated: bool | None = Field(
        default=None, description="true: the image was generated (served with a visible label); false: a photo."
    )


class ProductList(Strict):
    items: list[ProductOut]


class SimilarResponse(Strict):
    product_id: str
    method: str
    model_version: str
    items: list[RecommendedProduct]


class HistoryEvent(Strict):
    product_id: str
    title: str | None
    event_type: str
    ts: UtcTime | None
    quantity: float | None


class HistoryResponse(Strict):
    customer_id: str
    known_to_model: bool
    events: list[HistoryEvent]


class CampaignProductOut(Strict):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)  # sent as the campaign made it
    rank: int
    product_id: str
    title: str | None
    price: float | None
    score: float
    reason: str
    image: Literal["photo", "generated"] | None = Field(description="generated images are shown labelled")


class CampaignResponse(Strict):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)  # the e-mail texts byte for byte
    customer_id: str
    theme: str | None
    model_version: str
    products: list[CampaignProductOut]
    message: str | None = Field(description="Why the product list is empty, when it is.")
    html: str = Field(description="The self-contained HTML e-mail (images inline).")
    text: str = Field(description="The plain-text part of the e-mail.")
    banner_png: str | None = Field(default=None, description="The banner as a data:image/png;base64 URI.")


class CustomerOut(Strict):
    customer_id: str
    products: int


class CustomerList(Strict):
    items: list[CustomerOut]


class EventIn(Body):
    event_id: Id | None = Field(
        default=None, description="Idempotency key: an event re-sent with the same id is stored once."
    )
    customer_id: Id
    product_id: Id
    event_type: Literal["view", "cart", "purchase"]
    ts: Annotated[datetime, BeforeValidator(_iso_time), WithJsonSchema({"type": "string", "pattern": TIME.pattern})] \
        | None = Field(
        default=None,
        description="When it happened, ISO 8601 (default: now; times without an offset are UTC; 1970-2100).",
    )
    quantity: float | None = Field(default=None, gt=0, le=1e6, strict=True)
    price: float | None = Field(default=None, ge=0, le=1e7, strict=True)

    @field_validator("ts")
    @classmethod
    def _sane_time(cls, ts: datetime | None) -> datetime | None:
        if ts is None:
            return None
        try:
            utc = ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts
        except (OverflowError, ValueError):
            raise ValueError("time out of range") from None
        if utc.year < 1970:
            raise ValueError("time must be after 1970")
        latest = datetime.now(timezone.utc).replace(tzinfo=None) + FUTURE_SLACK
        if utc > latest:
            # A future-dated event would move no "now" (retailgan.data.reftime), but it is a
            # client's clock or parsing error: refuse it rather than store what is ignored.
            raise ValueError(f"time is more than {FUTURE_SLACK.days} day after the server's clock")
        return utc


class EventBatch(Body):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsAccepted(Strict):
    accepted: int
    written: int = Field(description="New rows (re-sent event ids are not written twice).")


class ModelStatus(Strict):
    model: str
    version: str
    path: str
    loaded_at: datetime
    foldin: bool
    items: int
    customers: int
    reload_state: Literal["idle", "loading", "failed", "succeeded"]
    last_error: str | None


class ReloadRequest(Body):
    wait: bool = Field(
        default=False, strict=True, description="Answer when the reload has finished (else 202 at once)."
    )


class ForgetRequest(Strict):
    customer_ids: list[Id] = Field(
        min_length=1, max_length=100, description="Customers to erase (a request to be forgotten)."
    )
    reference: str | None = Field(
        default=None, max_length=200, description="The request's reference (a ticket number), kept in the audit record."
    )


class ForgetResponse(Strict):
    """The audit record (no customer ids): rows removed per place."""

    erasure_id: str
    at: str
    reference: str | None
    customers: int
    store: dict[str, int]
    models: dict[str, int]
    campaigns: dict[str, int]
    service: dict[str, int]


class Health(Strict):
    status: str
    model_version: str | None = None
