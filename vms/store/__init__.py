"""The only code that speaks SQL: the schema, row mapping and the store the service uses.

`open_store(config)` picks the engine: PostgreSQL when `database_url` is set, else the SQLite
file in DATA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vms.store.database import Database
from vms.store.errors import Conflict, NotFound, StoreError
from vms.store.history import Cursor
from vms.store.schema import MIGRATIONS

if TYPE_CHECKING:
    from vms.config import Config

# What every engine offers; the SQLite Database is the reference (a Protocol once there are two).
Store = Database


async def open_store(config: Config) -> Store:
    """Open the configured store, bringing its schema up to date."""
    if config.database_url:
        from vms.store.postgres import PgDatabase  # type: ignore[import-not-found]

        store: Store = await PgDatabase.open(config.database_url)
        return store
    return await Database.open(config.database_path)


__all__ = [
    "MIGRATIONS",
    "Conflict",
    "Cursor",
    "Database",
    "NotFound",
    "Store",
    "StoreError",
    "open_store",
]
