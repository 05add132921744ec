"""Service settings (``retailgan serve`` options; tests build them directly)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from retailgan.serving.security import ENV_KEYS

ENV_EVENTS_DB = "RETAILGAN_EVENTS_DB"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: Path = Field(description="Model directory (written by `retailgan train`); reloads read it again.")
    store: Path = Field(description="The DuckDB store: catalogue, histories, and (without events_db) events.")
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
    events_db: str | None = Field(
        default_factory=lambda: os.environ.get(ENV_EVENTS_DB) or None,
        description="PostgreSQL URL for events shared by many processes and hosts (retailgan.serving.pgevents); "
        f"None: events go to the DuckDB store (one process). Default: ${ENV_EVENTS_DB}.",
    )
    events_poll_s: float = Field(
        default=1.0, gt=0, le=60,
        description="With events_db: longest delay before another replica's events are folded in here "
        "(the polling fallback of LISTEN/NOTIFY).",
    )
    rate_limit_redis: str | None = Field(
        default=None, description="Redis URL for rate-limit buckets shared by every process and host; None: "
        "per process (retailgan.serving.shared_limits).",
    )
    as_of: str | None = Field(
        default=None,
        description="Reference time of recency rules (recent sales, campaigns' recent_days): 'now' (the wall "
        "clock at each use), an ISO date / time (UTC), or None: the store's latest ingested event "
        "(retailgan.data.reftime).",
    )
