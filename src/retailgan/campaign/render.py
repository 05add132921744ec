"""The per-customer e-mail: one self-contained HTML file (inline CSS, images inlined as ``data:``
URIs, no scripts, no external resources), its plain-text part, and a banner PNG.

Product images come from the store (:mod:`retailgan.data.images`). Generated images are labelled
twice wherever they are shown: the picture itself carries a stamped red "generated" band
(:func:`retailgan.imagegen.provenance.label_generated`) and the e-mail shows a "generated image"
text badge next to it. Products without any image show a labelled placeholder box. Every text is
HTML-escaped. Everything here is deterministic (PNG files carry no timestamps), so a rebuilt
campaign is byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_PLACEHOLDER = "image placeholder (no product image)"
GENERATED_BADGE = "generated image"
EMAIL_IMAGE_PX = 128
"""Largest side of a product image in the e-mail (photos are shrunk; small generated ones enlarged)."""
BANNER_TILES = 4
"""Products shown on the banner (the top-ranked ones)."""
TILE_PX = 128
_PAD = 8
_TEXT_H = 34
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class EmailProduct:
    rank: int
    product_id: str
    title: str | None
    price: float | None
    reason: str
    image: str | None = None
    """``"photo"``, ``"generated"`` or ``None`` (no image)."""


@dataclass(frozen=True)
class ProductImage:
    """A product's image prepared for display: PNG bytes (generated ones already labelled)."""

    kind: str
    png: bytes
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def email_stem(customer_id: str) -> str:
    """File name stem for a customer: the id itself when it is a plain name, else ``id-<sha256 prefix>``
    (ids with slashes, spaces or other characters must not escape ``emails/``)."""
    if _SAFE_NAME.fullmatch(customer_id) and customer_id not in (".", ".."):
        return customer_id
    return "id-" + hashlib.sha256(customer_id.encode("utf-8")).hexdigest()[:16]


def _price(p: float | None) -> str:
    return "price unknown" if p is None or not math.isfinite(p) else f"{p:.2f}"


def _png(im: Any, level: int = 6) -> bytes:
    buf = io.BytesIO()
    # No text chunks, no timestamps: identical pixels give identical bytes.
    im.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def prepare_image(png: bytes, generated: bool) -> ProductImage:
    """Decode a stored product image and make its display version.

    Photos are shrunk to at most ``EMAIL_IMAGE_PX`` a side. Generated images are shrunk the same
    way and then stamped with the visible "generated" band (which enlarges small images so that the
    label stays readable).
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as src:
        src.load()
        im = src.convert("RGB")
    im.thumbnail((EMAIL_IMAGE_PX, EMAIL_IMAGE_PX), Image.Resampling.LANCZOS)
    if generated:
        from retailgan.imagegen.provenance import label_generated

        im = label_generated(im)
    return ProductImage(kind="generated" if generated else "photo", png=_png(im), width=im.width,
                        height=im.height)


def render_text(customer_id: str, products: list[EmailProduct], theme: str | None) -> str:
    """The plain-text part."""
    lines = [f"Picked for you, customer {customer_id}" + (f" ({theme})" if theme else ""), ""]
    for p in products:
        lines.append(f"{p.rank}. {p.title or p.product_id} - {_price(p.price)}")
        lines.append(f"   product {p.product_id}; why: {p.reason}")
    if not products:
        lines.append("No product matches this campaign for you.")
    return "\n".join(lines) + "\n"


def _image_cell(p: EmailProduct, img: ProductImage | None) -> str:
    e = html.escape
    if img is None:
        return ('<div data-image="none" style="width:96px;height:96px;border:2px dashed #999;color:#666;'
                'font-size:11px;display:flex;align-items:center;justify-content:center;text-align:center">'
                f"{e(IMAGE_PLACEHOLDER)}</div>")
    alt = f"{p.title or p.product_id}" + (" (generated image)" if img.kind == "generated" else "")
    out = (f'<img data-image="{img.kind}" src="{img.data_uri}" width="{img.width}" height="{img.height}" '
           f'alt="{e(alt)}" style="display:block">')
    if img.kind == "generated":
        out += ('<div class="generated-badge" style="margin-top:2px;color:#fff;background:#c81e1e;'
                f'font-size:11px;font-weight:bold;padding:1px 4px;display:inline-block">{e(GENERATED_BADGE)}</div>')
    return out


def render_html(
    customer_id: str,
    products: list[EmailProduct],
    theme: str | None,
    images: Mapping[str, ProductImage] | None = None,
    banner_png: bytes | None = None,
) -> str:
    """The HTML part (self-contained: inline styles and ``data:`` images, no scripts, no external resources).

    ``images``: product id -> prepared image (products not in it get the placeholder);
    ``banner_png``: shown at the top when given.
    """
    e = html.escape
    images = images or {}
    heading = f"Picked for you, customer {customer_id}" + (f" ({theme})" if theme else "")
    top = ""
    if banner_png is not None:
        uri = "data:image/png;base64," + base64.b64encode(banner_png).decode("ascii")
        top = f'<img data-image="banner" src="{uri}" alt="{e(heading)}" style="display:block;max-width:100%">\n'
    rows = []
    for p in products:
        rows.append(
            f'<tr data-product="{e(p.product_id)}"><td style="padding:8px;vertical-align:top;width:{EMAIL_IMAGE_PX}px">'
            f"{_image_cell(p, images.get(p.product_id))}"
            '</td><td style="padding:8px;vertical-align:top">'
            f'<div class="title" style="font-weight:bold">{p.rank}. {e(p.title or p.product_id)}</div>'
            f'<div class="price">{e(_price(p.price))}</div>'
            f'<div class="reason" style="color:#555;font-size:13px">product {e(p.product_id)}; why: {e(p.reason)}</div>'
            "</td></tr>"
        )
    body = "".join(rows) or "<tr><td>No product matches this campaign for you.</td></tr>"
    note = ""
    if any(img.kind == "generated" for p in products if (img := images.get(p.product_id)) is not None):
        note = ('<p style="color:#555;font-size:12px">Images marked &quot;generated&quot; are computer-generated '
                "illustrations, not photos of the product.</p>\n")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(heading)}</title></head>\n"
        '<body style="font-family:Arial,Helvetica,sans-serif;max-width:640px;margin:auto">'
        f"<h1 style=\"font-size:20px\">{e(heading)}</h1>\n{top}"
        f'<table style="border-collapse:collapse;width:100%">{body}</table>\n{note}'
        "</body></html>\n"
    )


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def banner_tile(p: EmailProduct, img: ProductImage | None) -> Any:
    """One product's banner tile (PIL RGB): its image (generated ones carry their stamped label; none:
    a labelled grey box) above its title and price. Depends only on the product, so callers cache it."""
    from PIL import Image, ImageDraw, ImageFont

    tile = Image.new("RGB", (TILE_PX, TILE_PX + _TEXT_H), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    if img is None:
        draw.rectangle([0, 0, TILE_PX - 1, TILE_PX - 1], fill=(235, 235, 235), outline=(150, 150, 150))
        draw.text((6, TILE_PX // 2 - 6), "no product image", fill=(90, 90, 90), font=font)
    else:
        with Image.open(io.BytesIO(img.png)) as src:
            pic = src.convert("RGB")
        scale = TILE_PX / max(pic.size)  # fill the tile (up or down), keeping the aspect ratio
        pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))),
                         Image.Resampling.NEAREST if img.kind == "generated" else Image.Resampling.LANCZOS)
        tile.paste(pic, ((TILE_PX - pic.width) // 2, (TILE_PX - pic.height) // 2))
    draw.text((0, TILE_PX + 3), _fit(draw, p.title or p.product_id, font, TILE_PX), fill=(20, 20, 20), font=font)
    draw.text((0, TILE_PX + 18), _price(p.price), fill=(20, 20, 20), font=font)
    return tile


def render_banner(
    products: Sequence[EmailProduct], images: Mapping[str, ProductImage], tiles: dict[str, Any] | None = None
) -> bytes:
    """The banner PNG: the top ``BANNER_TILES`` products side by side (:func:`banner_tile`).

    ``tiles``: an optional cache, product id -> tile, filled as tiles are drawn.
    """
    from PIL import Image, ImageDraw, ImageFont

    shown = list(products[:BANNER_TILES])
    n = max(len(shown), 1)
    canvas = Image.new("RGB", (_PAD + n * (TILE_PX + _PAD), _PAD + TILE_PX + _TEXT_H + _PAD), (255, 255, 255))
    if not shown:
        ImageDraw.Draw(canvas).text((_PAD, _PAD), "No product matches this campaign.", fill=(60, 60, 60),
                                    font=ImageFont.load_default())
    for i, p in enumerate(shown):
        tile = None if tiles is None else tiles.get(p.product_id)
        if tile is None:
            tile = banner_tile(p, images.get(p.product_id))
            if tiles is not None:
                tiles[p.product_id] = tile
        canvas.paste(tile, (_PAD + i * (TILE_PX + _PAD), _PAD))
    return _png(canvas, level=3)
