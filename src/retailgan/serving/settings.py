"""Service settings (``retailgan serve`` options; tests build them directly)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from retailgan.serving.security import ENV_KEYS


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: Path = Field(description="Model directory (written by `retailgan train`); reloads read it again.")
    store: Path = Field(description="The DuckDB store: catalogue, histories, and where events are written.")
    keys_file: Path | None = Field(default=None, description="API keys file, lines name:role:sha256hex.")
    api_keys: str | None = Field(
        default_factory=lambda: os.environ.get(ENV_KEYS), description=f"Key entries (default: ${ENV_KEYS})."
    )
    auth: bool = Field(default=True, description="False serves without keys (local experiments only).")
    rate_limit: float = Field(default=50.0, gt=0, description="Requests per second per key (token refill).")
    rate_burst: int = Field(default=100, ge=1, description="Token bucket size per key.")
    anon_rate_limit: float = Field(
        default=5.0, gt=0, description="Requests per second per client address without a valid key (401/403)."
    )
    anon_rate_burst: int = Field(default=20, ge=1, description="Token bucket size per client address without a key.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Larger request bodies get 413.")
    as_of: str | None = Field(
        default=None,
        description="Reference time of recency rules (recent sales, campaigns' recent_days): 'now' (the wall "
        "clock at each use), an ISO date / time (UTC), or None: the store's latest ingested event "
        "(retailgan.data.reftime).",
    )
