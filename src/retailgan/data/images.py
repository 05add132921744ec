"""Product images in the store: retailer photos and generated images, each flagged as which it is.

One table, created on first write::

    item_images(item_id VARCHAR PRIMARY KEY, png BLOB, generated BOOLEAN, width INTEGER, height INTEGER,
                source VARCHAR, model_version VARCHAR, seed BIGINT, added_at TIMESTAMP)

Every image is stored as PNG. ``generated`` is true for images made by a generator (their PNG also
carries the provenance text chunks of :mod:`retailgan.imagegen.provenance`); ``source`` is the
photo's file name or the generator's name. Anything that shows a generated image to people must
label it visibly (:func:`retailgan.imagegen.provenance.label_generated`).

Writes are one transaction each (all images of a call or none). Reading works on read-only stores
and on stores that never had an image (no table: no images).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from retailgan.data.store import Store, fetch1
from retailgan.errors import ImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PHOTO_BYTES",
    "ItemImage",
    "PhotoImport",
    "encode_png",
    "get_image",
    "get_images",
    "image_counts",
    "image_flags",
    "import_photos",
    "items_without_image",
    "put_images",
]

TABLE = "item_images"
DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (item_id VARCHAR PRIMARY KEY, png BLOB NOT NULL, "
    "generated BOOLEAN NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, source VARCHAR, "
    "model_version VARCHAR, seed BIGINT, added_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
MAX_PHOTO_BYTES = 20 * 1024 * 1024
MAX_PHOTO_SIDE = 4096


@dataclass(frozen=True)
class ItemImage:
    """One product's image (PNG bytes) and where it came from."""

    item_id: str
    png: bytes
    generated: bool
    width: int
    height: int
    source: str | None = None
    model_version: str | None = None
    seed: int | None = None


def encode_png(image, metadata: Mapping[str, str] | None = None) -> tuple[bytes, int, int]:
    """PNG bytes of a PIL image or uint8 array ((c, h, w) or (h, w)), with text ``metadata``; also width, height."""
    from PIL import Image, PngImagePlugin

    if not isinstance(image, Image.Image):
        from retailgan.imagegen.provenance import _to_pil

        image = _to_pil(image)
    info = PngImagePlugin.PngInfo()
    for k, v in (metadata or {}).items():
        info.add_text(str(k), str(v))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue(), image.width, image.height


def _has_table(store: Store) -> bool:
    row = fetch1(store.con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?", [TABLE]))
    return bool(row and row[0])


def put_images(store: Store, images: Iterable[ItemImage], *, replace: bool = False) -> int:
    """Store images in one transaction; with ``replace=False`` products that already have an image keep it.
    Every product must be in the catalogue. Returns the number of images written."""
    images = list(images)
    if not images:
        return 0
    ids = [im.item_id for im in images]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ImageError(f"product {dup!r} has more than one image in this batch")
    with store.transaction() as con:
        con.execute(DDL)
        known = {r[0] for r in con.execute(
            "SELECT item_id FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()}
        missing = [i for i in ids if i not in known]
        if missing:
            raise ImageError(f"product {missing[0]!r} is not in the catalogue ({len(missing)} such product(s))")
        if replace:
            con.execute(f"DELETE FROM {TABLE} WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        else:
            have = {r[0] for r in con.execute(
                f"SELECT item_id FROM {TABLE} WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()}
            images = [im for im in images if im.item_id not in have]
        for im in images:
            con.execute(
                f"INSERT INTO {TABLE} (item_id, png, generated, width, height, source, model_version, seed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [im.item_id, im.png, im.generated, im.width, im.height, im.source, im.model_version, im.seed],
            )
    return len(images)


_COLUMNS = "item_id, png, generated, width, height, source, model_version, seed"


def _row(r: Sequence) -> ItemImage:
    return ItemImage(str(r[0]), bytes(r[1]), bool(r[2]), int(r[3]), int(r[4]), r[5], r[6],
                     None if r[7] is None else int(r[7]))


def get_image(store: Store, item_id: str) -> ItemImage | None:
    """The product's image, or ``None``."""
    if not _has_table(store):
        return None
    row = fetch1(store.con.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE item_id = ?", [item_id]))
    return None if row is None else _row(row)


def get_images(store: Store, item_ids: Sequence[str]) -> dict[str, ItemImage]:
    """Images of the given products that have one."""
    if not item_ids or not _has_table(store):
        return {}
    rows = store.con.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [list(item_ids)]
    ).fetchall()
    return {str(r[0]): _row(r) for r in rows}


def image_flags(store: Store, item_ids: Sequence[str] | None = None) -> dict[str, bool]:
    """``item_id -> generated`` for the products (all when ``None``) that have an image."""
    if not _has_table(store):
        return {}
    if item_ids is None:
        rows = store.con.execute(f"SELECT item_id, generated FROM {TABLE}").fetchall()
    else:
        rows = store.con.execute(
            f"SELECT item_id, generated FROM {TABLE} WHERE item_id IN (SELECT unnest(?::VARCHAR[]))",
            [list(item_ids)]).fetchall()
    return {str(i): bool(g) for i, g in rows}


def items_without_image(store: Store) -> list[tuple[str, str | None, str | None]]:
    """``(item_id, category, title)`` of catalogue products without an image, by item id."""
    where = f"WHERE item_id NOT IN (SELECT item_id FROM {TABLE}) " if _has_table(store) else ""
    return [(str(i), c, t) for i, c, t in store.con.execute(
        f"SELECT item_id, category, title FROM items {where}ORDER BY item_id").fetchall()]


def image_counts(store: Store) -> dict[str, int]:
    """Catalogue products with a photo, with a generated image, and without an image."""
    items = int(fetch1(store.con.execute("SELECT count(*) FROM items"))[0])  # type: ignore[index]
    if not _has_table(store):
        return {"photos": 0, "generated": 0, "without_image": items}
    photos, generated = fetch1(store.con.execute(
        f"SELECT count(*) FILTER (NOT generated), count(*) FILTER (generated) FROM {TABLE} "
        "WHERE item_id IN (SELECT item_id FROM items)"))  # type: ignore[misc]
    return {"photos": int(photos), "generated": int(generated), "without_image": items - int(photos) - int(generated)}


@dataclass(frozen=True)
class PhotoImport:
    """What :func:`import_photos` did: images stored, files skipped (with the reason, naming the file)."""

    stored: int
    skipped: list[tuple[str, str]]


def _read_photo(path: Path) -> tuple[bytes, int, int]:
    from PIL import Image, UnidentifiedImageError

    size = path.stat().st_size
    if size > MAX_PHOTO_BYTES:
        raise ImageError(f"{path}: {size} bytes, larger than the {MAX_PHOTO_BYTES} byte limit")
    try:
        with Image.open(path) as im:
            if max(im.size) > MAX_PHOTO_SIDE:
                raise ImageError(f"{path}: {im.width}x{im.height} pixels, larger than {MAX_PHOTO_SIDE} on a side")
            im.load()
            im = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else ("L" if im.mode in ("L", "1") else "RGB"))
            return encode_png(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def import_photos(store: Store, folder: str | Path, *, replace: bool = False) -> PhotoImport:
    """Store the retailer's photos from ``folder``: files named ``<product id>.<png|jpg|jpeg|webp|gif|bmp>``.

    Files that are not images, are too large, or name no catalogue product are skipped and reported
    (file and reason); a product named by two files is an error. All readable photos are stored in
    one transaction; with ``replace=True`` they replace existing images (photos or generated).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ImageError(f"{folder}: no files")
    catalogue = {r[0] for r in store.con.execute("SELECT item_id FROM items").fetchall()}
    skipped: list[tuple[str, str]] = []
    by_item: dict[str, Path] = {}
    images: list[ItemImage] = []
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(p), f"not an image file name (expected {', '.join(IMAGE_SUFFIXES)})"))
            continue
        item = p.stem
        if item not in catalogue:
            skipped.append((str(p), f"no product {item!r} in the catalogue"))
            continue
        if item in by_item:
            raise ImageError(f"{p}: product {item!r} already has a photo in {by_item[item].name}")
        try:
            png, w, h = _read_photo(p)
        except ImageError as exc:
            skipped.append((str(p), str(exc).removeprefix(f"{p}: ")))
            continue
        by_item[item] = p
        images.append(ItemImage(item, png, False, w, h, source=p.name))
    stored = put_images(store, images, replace=replace)
    return PhotoImport(stored=stored, skipped=skipped)
