"""All settings, read from LABELLOOP_* environment variables (or a .env file)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Le
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.policy import BUNDLED_POLICIES, Duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./labelloop.db"
    policies: Path = BUNDLED_POLICIES
    host: str = "127.0.0.1"
    port: Annotated[int, Ge(1), Le(65535)] = 8000
    allowed_disorder: Duration = timedelta(seconds=5)
    idle_timeout: Duration = timedelta(seconds=5)
    orphan_ttl: Duration = timedelta(hours=24)
    sweep_interval: Duration = Field(
        timedelta(seconds=1), description="How often the idle watermark and window sweep run."
    )
    max_batch: Annotated[int, Ge(1)] = 10_000
    migrate_on_start: bool | None = Field(
        None, description="Run migrations when `serve` starts; default: on for SQLite, off otherwise."
    )
    log_level: str = "info"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_migrate_on_start(self) -> bool:
        return self.is_sqlite if self.migrate_on_start is None else self.migrate_on_start
