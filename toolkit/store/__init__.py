"""The DuckDB interaction store: canonical schema, connection, import, validation and export."""

from toolkit.store.connection import STORE_ENV, connect, database_path, default_store, has_table, open_store, store_file
from toolkit.store.dataset import export_partitioned, open_dataset, open_source
from toolkit.store.digest import table_digests
from toolkit.store.history import history_until
from toolkit.store.schema import ACTIONS, SCHEMA_VERSION, SURFACES, TABLES

__all__ = ["STORE_ENV", "connect", "database_path", "default_store", "has_table", "open_store", "store_file", "table_digests", "history_until", "export_partitioned", "open_dataset", "open_source", "ACTIONS", "SCHEMA_VERSION", "SURFACES", "TABLES"]
