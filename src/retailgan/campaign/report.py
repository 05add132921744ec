"""The campaign report: ``report.html`` (self-contained: numbers with one-line definitions, the most
recommended products, the chart inlined) and ``report.png`` (the chart, matplotlib Agg).

Both are deterministic functions of the summary and the per-product counts, so a resumed build
writes the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

TOP_PRODUCTS = 15
"""Rows of the most-recommended-products table (and bars of the chart)."""

DEFINITIONS: list[tuple[str, str, str]] = [
    ("customers", "Customers", "customers in the segment (each gets one e-mail)"),
    ("customers_with_products", "Customers with products", "customers with at least one product to send"),
    ("rows", "Product slots", "recommended (customer, product) pairs, at most K per customer"),
    ("distinct_products", "Distinct products", "products sent to at least one customer"),
    ("catalogue_coverage", "Catalogue coverage", "distinct products / products the model knows"),
    ("diversity", "Diversity across customers", "distinct products / product slots (1 = no product repeats)"),
    ("photo_share", "Photo share", "share of product slots shown with a retailer photo"),
    ("generated_image_share", "Generated-image share",
     "share of product slots shown with a generated (labelled) image"),
    ("no_image_share", "No-image share", "share of product slots shown with a placeholder"),
    ("conversion_rate", "Assumed conversion rate", "probability a customer buys one product sent"),
    ("expected_revenue", "Expected revenue",
     "sum over slots of price x conversion rate x the slot's share of the customer's positive scores "
     "(a planning figure, not a forecast; see retailgan.campaign.build)"),
]

_FORMULA = ("p(u, i) = conversion_rate * max(s_ui, 0) / sum_j max(s_uj, 0) (uniform 1/K if all scores <= 0); "
            "expected_revenue = sum over u, i of price_i * p(u, i); products without a price add nothing.")


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "n/a"
    if key.endswith("_share") or key in ("catalogue_coverage", "diversity", "conversion_rate"):
        return f"{float(value):.1%}"
    if key == "expected_revenue":
        return f"{float(value):,.2f}"
    return str(value)


def _chart(summary: dict[str, Any], sent: Counter[str], titles: dict[str, str | None]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), dpi=80)
    a1, a2, a3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.6, 1.2]})
    shares = [summary.get(k) or 0.0 for k in ("photo_share", "generated_image_share", "no_image_share")]
    a1.bar(["photo", "generated", "none"], shares, color=["#2a7ab0", "#c81e1e", "#999999"])
    a1.set_ylim(0, 1)
    a1.set_title("Image source of product slots", fontsize=10)
    a1.tick_params(axis="x", labelsize=8)
    top = sent.most_common(TOP_PRODUCTS)
    labels = [(titles.get(p) or p)[:28] for p, _ in top][::-1]
    a2.barh(range(len(top)), [n for _, n in top][::-1], color="#2a7ab0")
    a2.set_yticks(range(len(top)), labels, fontsize=7)
    a2.set_title(f"Most recommended products (top {len(top)})", fontsize=10)
    a2.set_xlabel("customers", fontsize=8)
    counts = list(sent.values())
    if counts:
        a3.hist(counts, bins=min(30, max(len(set(counts)), 1)), color="#555555")
    a3.set_title("Customers per product sent", fontsize=10)
    a3.set_xlabel("customers", fontsize=8)
    a3.set_ylabel("products", fontsize=8)
    if not counts:
        for ax in (a1, a2, a3):
            ax.text(0.5, 0.5, "empty campaign", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: stable bytes
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(folder: Path, summary: dict[str, Any], sent: Counter[str], titles: dict[str, str | None]) -> None:
    """Write ``report.png`` and ``report.html`` into ``folder``.

    ``sent``: product id -> customers it was recommended to; ``titles``: product id -> title.
    """
    e = html.escape
    png = _chart(summary, sent, titles)
    _write(folder / "report.png", png)
    rows = "".join(
        f"<tr><td>{e(label)}</td><td class=\"num\" data-key=\"{key}\">{e(_fmt(summary.get(key), key))}</td>"
        f"<td>{e(definition)}</td></tr>"
        for key, label, definition in DEFINITIONS
    )
    top = "".join(
        f"<tr><td>{i}</td><td>{e(p)}</td><td>{e(titles.get(p) or '')}</td><td class=\"num\">{n}</td></tr>"
        for i, (p, n) in enumerate(sent.most_common(TOP_PRODUCTS), 1)
    ) or '<tr><td colspan="4">No product was recommended.</td></tr>'
    theme = summary.get("theme") or "none"
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Campaign report</title>\n"
        "<style>body{font-family:Arial,Helvetica,sans-serif;max-width:900px;margin:auto}"
        "table{border-collapse:collapse;margin-bottom:16px}td,th{border:1px solid #ccc;padding:4px 8px;"
        "font-size:13px;text-align:left}td.num{text-align:right}</style></head>\n<body>\n"
        "<h1 style=\"font-size:20px\">Campaign report</h1>\n"
        f"<p>Segment <code>{e(str(summary.get('segment')))}</code>, theme <code>{e(str(theme))}</code>, "
        f"K = {e(str(summary.get('k')))}, model <code>{e(str(summary.get('model_version')))}</code>.</p>\n"
        f"<table><tr><th>Figure</th><th>Value</th><th>Definition</th></tr>{rows}</table>\n"
        f"<p style=\"font-size:12px;color:#555\">Expected revenue: {e(_FORMULA)}</p>\n"
        "<img alt=\"Campaign charts\" style=\"max-width:100%\" src=\"data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}\">\n"
        "<h2 style=\"font-size:16px\">Most recommended products</h2>\n"
        f"<table><tr><th>#</th><th>Product</th><th>Title</th><th>Customers</th></tr>{top}</table>\n"
        "</body></html>\n"
    )
    _write(folder / "report.html", page.encode("utf-8"))
