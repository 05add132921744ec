"""The per-customer e-mail: one self-contained HTML file (inline CSS, no external resources) and
its plain-text part. Every text is HTML-escaped. Products have no catalogue images yet, so each
product shows a clearly labelled placeholder box instead of a picture."""

from __future__ import annotations

import hashlib
import html
import math
import re
from dataclasses import dataclass

IMAGE_PLACEHOLDER = "image placeholder (no catalogue image yet)"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class EmailProduct:
    rank: int
    product_id: str
    title: str | None
    price: float | None
    reason: str


def email_stem(customer_id: str) -> str:
    """File name stem for a customer: the id itself when it is a plain name, else ``id-<sha256 prefix>``
    (ids with slashes, spaces or other characters must not escape ``emails/``)."""
    if _SAFE_NAME.fullmatch(customer_id) and customer_id not in (".", ".."):
        return customer_id
    return "id-" + hashlib.sha256(customer_id.encode("utf-8")).hexdigest()[:16]


def _price(p: float | None) -> str:
    return "price unknown" if p is None or not math.isfinite(p) else f"{p:.2f}"


def render_text(customer_id: str, products: list[EmailProduct], theme: str | None) -> str:
    """The plain-text part."""
    lines = [f"Picked for you, customer {customer_id}" + (f" ({theme})" if theme else ""), ""]
    for p in products:
        lines.append(f"{p.rank}. {p.title or p.product_id} - {_price(p.price)}")
        lines.append(f"   product {p.product_id}; why: {p.reason}")
    if not products:
        lines.append("No product matches this campaign for you.")
    return "\n".join(lines) + "\n"


def render_html(customer_id: str, products: list[EmailProduct], theme: str | None) -> str:
    """The HTML part (self-contained: inline styles, no scripts, no external images)."""
    e = html.escape
    heading = f"Picked for you, customer {customer_id}" + (f" ({theme})" if theme else "")
    rows = []
    for p in products:
        rows.append(
            '<tr><td style="padding:8px;vertical-align:top">'
            '<div style="width:96px;height:96px;border:2px dashed #999;color:#666;font-size:11px;'
            f'display:flex;align-items:center;justify-content:center;text-align:center">{e(IMAGE_PLACEHOLDER)}</div>'
            '</td><td style="padding:8px;vertical-align:top">'
            f'<div style="font-weight:bold">{p.rank}. {e(p.title or p.product_id)}</div>'
            f'<div>{e(_price(p.price))}</div>'
            f'<div style="color:#555;font-size:13px">product {e(p.product_id)}; why: {e(p.reason)}</div>'
            "</td></tr>"
        )
    body = "".join(rows) or "<tr><td>No product matches this campaign for you.</td></tr>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(heading)}</title></head>\n"
        '<body style="font-family:Arial,Helvetica,sans-serif;max-width:640px;margin:auto">'
        f"<h1 style=\"font-size:20px\">{e(heading)}</h1>\n"
        f'<table style="border-collapse:collapse;width:100%">{body}</table>\n'
        "</body></html>\n"
    )
