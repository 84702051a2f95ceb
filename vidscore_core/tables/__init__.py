"""The table store: Parquet partitions published atomically, their schema, and the DuckDB views."""
