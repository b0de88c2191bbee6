"""The DuckDB interaction store: canonical schema, connection, import, validation and export."""

from toolkit.store.connection import connect, database_path
from toolkit.store.digest import table_digests
from toolkit.store.schema import ACTIONS, SCHEMA_VERSION, SURFACES, TABLES

__all__ = ["connect", "database_path", "table_digests", "ACTIONS", "SCHEMA_VERSION", "SURFACES", "TABLES"]
