"""The only code that speaks SQL: the schema, row mapping and the store the service uses.

`open_store(config)` picks the engine: PostgreSQL when `database_url` is set, else the SQLite
file in DATA. Callers are typed against `Store`, the interface both engines implement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vms.store.database import Database
from vms.store.errors import Conflict, NotFound, StoreError
from vms.store.history import Cursor
from vms.store.interface import Store
from vms.store.schema import MIGRATIONS

if TYPE_CHECKING:
    from vms.config import Config


async def open_store(config: Config) -> Store:
    """Open the configured store, bringing its schema up to date."""
    if config.database_url:
        from vms.store.postgres import PgDatabase

        return await PgDatabase.open(config.database_url)
    return await Database.open(config.database_path)


def store_name(config: Config) -> str:
    """Where the configured store is, for messages: the SQLite file, or the server and database
    (never the password)."""
    if config.database_url:
        from vms.store.postgres import where_to

        return where_to(config.database_url)
    return str(config.database_path)


__all__ = [
    "MIGRATIONS",
    "Conflict",
    "Cursor",
    "Database",
    "NotFound",
    "Store",
    "StoreError",
    "open_store",
    "store_name",
]
