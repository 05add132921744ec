"""Generated images for catalogue products that have no photo, stored with the product and flagged.

A product gets an image when its catalogue category is one of the image model's classes (compared
case-insensitively) or is mapped to one by ``category_map`` (e.g. ``{"SHOES": "Sneaker"}``), or else
when its title contains a word of ``title_map`` (e.g. ``{"BAG": "Bag"}``: whole words, case-insensitive,
the first matching entry wins) - for catalogues without categories, such as UCI Online Retail. Products
that match nothing are left without an image and counted per category, so a retailer sees which
products the model cannot draw. Each image's noise comes from a seed derived from the
product id and the run's seed, so the same product always gets the same image from the same model
(and a rerun adds images only for products that still lack one).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from retailgan.data.images import ItemImage, encode_png, items_without_image, put_images
from retailgan.data.store import Store
from retailgan.errors import ConfigError
from retailgan.imagegen import DEFAULT_TRUNCATION
from retailgan.imagegen.data import to_uint8
from retailgan.imagegen.model import ConditionalGAN
from retailgan.imagegen.provenance import provenance


@dataclass(frozen=True)
class FillReport:
    """What :func:`fill_catalogue` did."""

    generated: int
    per_class: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    """Products left without an image, per catalogue category (``""``: no category)."""
    model_version: str = ""


def item_seed(item_id: str, seed: int) -> int:
    """A 63-bit seed from a product id and a run seed (stable across processes and platforms)."""
    h = hashlib.sha256(f"{int(seed)}\0{item_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def class_lookup(model: ConditionalGAN, category_map: Mapping[str, str] | None) -> dict[str, int]:
    """Lower-cased catalogue category -> class index (the model's classes plus the mapped names)."""
    classes = {c.lower(): i for i, c in enumerate(model.classes)}
    lookup = dict(classes)
    for cat, cls in (category_map or {}).items():
        if cls.lower() not in classes:
            raise ConfigError(
                f"category map: {cat!r} -> {cls!r}, but the image model has no class {cls!r} "
                f"(classes: {', '.join(model.classes)})"
            )
        lookup[cat.lower()] = classes[cls.lower()]
    return lookup


def _title_rules(model: ConditionalGAN, title_map: Mapping[str, str] | None) -> list[tuple[re.Pattern[str], int]]:
    classes = {c.lower(): i for i, c in enumerate(model.classes)}
    rules = []
    for word, cls in (title_map or {}).items():
        if cls.lower() not in classes:
            raise ConfigError(
                f"title map: {word!r} -> {cls!r}, but the image model has no class {cls!r} "
                f"(classes: {', '.join(model.classes)})"
            )
        rules.append((re.compile(rf"\b{re.escape(word.strip())}\b", re.IGNORECASE), classes[cls.lower()]))
    return rules


def fill_catalogue(
    store: Store,
    model: ConditionalGAN,
    *,
    category_map: Mapping[str, str] | None = None,
    title_map: Mapping[str, str] | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 256,
    truncation: float = DEFAULT_TRUNCATION,
) -> FillReport:
    """Generate and store an image for every catalogue product without one whose category the model can draw.

    All images of one call are written in one transaction (none on error). ``limit`` caps how many
    are generated (in product id order).
    """
    if not model.version:
        raise ConfigError("the image model has no version; load it from a saved model directory")
    lookup = class_lookup(model, category_map)
    rules = _title_rules(model, title_map)
    todo: list[tuple[str, int]] = []
    unmatched: Counter[str] = Counter()
    for item, category, title in items_without_image(store):
        cls = lookup.get((category or "").strip().lower())
        if cls is None and title:
            cls = next((c for pattern, c in rules if pattern.search(title)), None)
        if cls is None:
            unmatched[category or ""] += 1
        else:
            todo.append((item, cls))
    if limit is not None:
        todo = todo[: max(int(limit), 0)]
    images: list[ItemImage] = []
    per_class: Counter[str] = Counter()
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        seeds = [item_seed(item, seed) for item, _ in part]
        z = truncation * torch.stack([model.noise(1, s)[0] for s in seeds])
        pixels = to_uint8(model.generate(np.array([c for _, c in part]), z=z))
        for (item, cls), s, px in zip(part, seeds, pixels, strict=True):
            meta = provenance(model.meta()["generator"], model.version, s, category=model.classes[cls],
                              product_id=item, truncation=truncation)
            png, w, h = encode_png(px, meta)
            images.append(
                ItemImage(item, png, True, w, h, source=meta["generator"], model_version=model.version, seed=s)
            )
            per_class[model.classes[cls]] += 1
    stored = put_images(store, images)
    return FillReport(generated=stored, per_class=dict(per_class), unmatched=dict(unmatched),
                      model_version=model.version)
