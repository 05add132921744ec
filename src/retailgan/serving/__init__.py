"""The recommendation service: ``retailgan serve`` (FastAPI + uvicorn) and its merchandiser page.

Install with ``pip install 'retailgan[serve]'``. Build an app with :func:`create_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from retailgan.serving.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings) -> FastAPI:
    """See :func:`retailgan.serving.app.create_app`."""
    from retailgan.serving.app import create_app as _create

    return _create(settings)


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from retailgan.serving.settings import Settings

        return Settings
    raise AttributeError(name)
