"""Personalised campaigns: per-customer top-K products with reasons, as e-mails and a Parquet table.

``retailgan campaign build`` (see :mod:`retailgan.campaign.cli`) runs
:func:`retailgan.campaign.build.build_campaign`; :func:`retailgan.campaign.customer.customer_campaign`
gives one customer's campaign on demand (same products, reasons and e-mail). Names are imported
lazily so that the command line starts without loading DuckDB, pyarrow and the models.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CHUNK_SIZE = 1000
"""Customers per resumable chunk."""

__all__ = ["DEFAULT_CHUNK_SIZE", "CampaignProduct", "CampaignSummary", "CustomerCampaign", "Segment", "Theme",
           "build_campaign", "customer_campaign", "parse_segment", "parse_theme"]


def __getattr__(name: str) -> Any:
    if name in ("CampaignSummary", "build_campaign"):
        from retailgan.campaign import build

        return getattr(build, name)
    if name in ("CampaignProduct", "CustomerCampaign", "customer_campaign"):
        from retailgan.campaign import customer

        return getattr(customer, name)
    if name in ("Segment", "Theme", "parse_segment", "parse_theme"):
        from retailgan.campaign import query

        return getattr(query, name)
    raise AttributeError(name)
