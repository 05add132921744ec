"""One customer's campaign on demand (for the HTTP service): the same products, reasons, e-mail and
banner as ``retailgan campaign build`` writes for that customer, computed by the same code
(:func:`retailgan.campaign.build.campaign_chunk`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from retailgan.campaign.build import CampaignContext, campaign_chunk
from retailgan.data.reftime import AsOf
from retailgan.data.store import Store, fetch1
from retailgan.errors import UnknownIdError
from retailgan.serving.engine import ModelBundle

__all__ = ["CampaignProduct", "CustomerCampaign", "customer_campaign"]

EMPTY_MESSAGE = "no product matches this campaign for this customer"


@dataclass(frozen=True)
class CampaignProduct:
    """One recommended product of a customer's campaign."""

    rank: int
    product_id: str
    title: str | None
    price: float | None
    score: float
    reason: str
    image: str | None
    """``"photo"``, ``"generated"`` (shown labelled) or ``None`` (no image)."""

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "product_id": self.product_id, "title": self.title, "price": self.price,
                "score": self.score, "reason": self.reason, "image": self.image}


@dataclass(frozen=True)
class CustomerCampaign:
    """A customer's campaign: products with reasons, the HTML and text e-mail, the banner PNG."""

    customer_id: str
    theme: str | None
    model_version: str
    products: list[CampaignProduct]
    html: str
    text: str
    banner_png: bytes | None
    message: str | None
    """Why ``products`` is empty (``None`` otherwise)."""

    def to_dict(self, *, banner: bool = True) -> dict[str, Any]:
        """JSON-ready dict; the banner as a ``data:image/png;base64,...`` URI (omitted with ``banner=False``
        or when there is none)."""
        out: dict[str, Any] = {
            "customer_id": self.customer_id, "theme": self.theme, "model_version": self.model_version,
            "products": [p.to_dict() for p in self.products], "html": self.html, "text": self.text,
            "message": self.message,
        }
        if banner and self.banner_png is not None:
            out["banner_png"] = "data:image/png;base64," + base64.b64encode(self.banner_png).decode("ascii")
        return out


def customer_campaign(
    bundle: ModelBundle,
    store: Store,
    customer_id: str,
    *,
    theme: str | None = None,
    k: int = 10,
    recent_days: int = 30,
    banner: bool = True,
    as_of: AsOf = None,
) -> CustomerCampaign:
    """The campaign ``retailgan campaign build`` would produce for ``customer_id`` (same defaults).

    ``store`` may be read-only. Raises :class:`UnknownIdError` when neither the store nor the model
    knows the customer, :class:`ConfigError` for a bad theme, ``k`` or ``recent_days``. With
    ``banner=False`` no banner is drawn (faster) and the HTML has none at its top. ``as_of``: the
    reference time ``recent_days`` counts back from (:mod:`retailgan.data.reftime`).
    """
    ctx = CampaignContext.create(bundle, theme, k, recent_days)
    ctx.now = store.reference_time(as_of).ts
    in_model = int(bundle.model.users.index([customer_id], missing="negative")[0]) >= 0
    if not in_model and fetch1(store.con.execute("SELECT 1 FROM users WHERE user_id = ?", [customer_id])) is None:
        raise UnknownIdError("customer", [customer_id])
    cols, (out,) = campaign_chunk(ctx, store, [customer_id], banners=banner)
    products = [
        CampaignProduct(rank=p.rank, product_id=p.product_id, title=p.title, price=p.price, score=score,
                        reason=p.reason, image=p.image)
        for p, score in zip(out.products, cols["score"], strict=True)
    ]
    return CustomerCampaign(
        customer_id=customer_id, theme=ctx.theme, model_version=bundle.label, products=products, html=out.html,
        text=out.text, banner_png=out.banner_png, message=None if products else EMPTY_MESSAGE,
    )
