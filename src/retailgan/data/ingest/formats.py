"""The formats ingest reads: their columns, default column names and cleaning rules."""

from __future__ import annotations

from retailgan.data.schemas import EVENT_TYPES

FORMATS: tuple[str, ...] = ("online-retail", "movielens-100k", "amazon-s3rec", "rechorus", "events")

ONLINE_RETAIL_COLUMNS: tuple[str, ...] = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
    "Country",
)  # fmt: skip

NON_PRODUCT_CODES: frozenset[str] = frozenset(
    {
        "POST",  # postage
        "DOT",  # DOTCOM postage
        "C2",  # carriage
        "M",  # manual adjustment (also written "m")
        "D",  # discount
        "S",  # samples
        "B",  # adjust bad debt
        "CRUK",  # CRUK commission
        "PADS",  # "pads to match all cushions", sold at 0.001
        "BANK CHARGES",
        "AMAZONFEE",
    }
)
"""Online Retail stock codes that are not products (compared case-insensitively).

Measured on the UCI file: every stock code is five digits optionally followed by letters
(``85123A``) except exactly these, the gift vouchers ``gift_0001_10`` .. ``gift_0001_50`` and the
``DCGS*`` codes of the dotcom gift-shop / eBay channel (``DCGS0003``, ``DCGSSBOY``, ...; several
are titled just "ebay"), which :data:`NON_PRODUCT_PREFIXES` catches.
"""

NON_PRODUCT_PREFIXES: tuple[str, ...] = ("GIFT_", "DCGS")
"""Stock-code prefixes (case-insensitive) of non-product lines: gift vouchers, DCGS channel codes."""


def is_non_product_code(code: str) -> bool:
    """Whether an Online Retail stock code is a fee, postage, adjustment or voucher line."""
    c = code.strip().upper()
    return c in NON_PRODUCT_CODES or c.startswith(NON_PRODUCT_PREFIXES)


MAPPING_KEYS: tuple[str, ...] = (
    "user", "item", "timestamp", "event_type", "quantity", "price", "rating", "event_id",
)  # fmt: skip
"""Keys of the ``events`` column mapping; ``user`` and ``item`` are required. ``event_id`` (a
source event id) only enters the event key, so identical events with different ids stay apart."""

CATALOGUE_KEYS: tuple[str, ...] = ("item", "title", "category", "price")

# Column names looked for when a key is not mapped explicitly (first one present wins).
_DEFAULT_NAMES: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userid", "customer_id"),
    "item": ("item", "item_id", "itemid", "product_id", "sku"),
    "timestamp": ("timestamp", "ts", "time", "event_time"),
    "event_type": ("event_type", "event", "type"),
    "quantity": ("quantity", "qty"),
    "price": ("price",),
    "rating": ("rating",),
    "event_id": ("event_id",),
    "title": ("title", "name"),
    "category": ("category",),
}

REASONS: dict[str, str] = {
    "duplicate": "exact duplicate of an earlier line (or, in general, of an earlier event with the "
    "same content); the first is kept",
    "cancellation": "Online Retail cancellation line (invoice number starts with C)",
    "missing_customer": "no CustomerID",
    "non_product_code": "postage, fee, discount, adjustment or voucher line "
    "(NON_PRODUCT_CODES / NON_PRODUCT_PREFIXES)",
    "non_positive_quantity": "quantity <= 0",
    "non_positive_price": "unit price <= 0",
    "cancelled_purchase": "purchase line cancelled by a later cancellation line of the same "
    "customer, stock code and quantity",
    "missing_user": "empty user id",
    "missing_item": "empty item id",
    "missing_timestamp": "empty timestamp",
    "unknown_event_type": "event type not one of " + ", ".join(EVENT_TYPES),
    "missing_rating": "rating event without a rating value",
    "negative_price": "price < 0",
    "invalid_value": "a cell that does not parse as its column's type (number, timestamp); "
    "stored as invalid_value:<column>",
    "missing_value": "an empty cell in a required column; stored as missing_value:<column>",
    "future_timestamp": "dated more than a day after the ingest ran (a clock or parsing error): "
    "kept, it would become every recency rule's \"now\" (retailgan.data.reftime)",
}
"""Every reject reason, with what it means. ``invalid_value`` and ``missing_value`` name the
column: ``invalid_value:Quantity``. (Any format; when more than half of a file's rows have one,
the file is refused instead: see ``_refuse_if_mostly_bad``.)"""

# Reasons per format, in priority order: a row dropped by several rules counts under the first.
_RULES: dict[str, tuple[str, ...]] = {
    "online-retail": (
        "duplicate", "cancellation", "missing_customer", "non_product_code",
        "non_positive_quantity", "non_positive_price", "cancelled_purchase",
    ),
    "movielens-100k": ("missing_user", "missing_item", "missing_rating", "duplicate"),
    "amazon-s3rec": ("duplicate",),
    "rechorus": ("missing_user", "missing_item", "missing_timestamp", "duplicate"),
    "events": (
        "missing_user", "missing_item", "missing_timestamp", "unknown_event_type",
        "missing_rating", "non_positive_quantity", "negative_price", "duplicate",
    ),
}  # fmt: skip

MOVIELENS_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flags of ``u.item``, in file order (``u.genre``)."""
