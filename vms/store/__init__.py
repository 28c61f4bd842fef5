"""The only code that speaks SQL: the schema, row mapping and the Database the service uses."""

from vms.store.database import Database
from vms.store.errors import Conflict, NotFound, StoreError
from vms.store.history import Cursor
from vms.store.schema import MIGRATIONS

__all__ = ["MIGRATIONS", "Conflict", "Cursor", "Database", "NotFound", "StoreError"]
