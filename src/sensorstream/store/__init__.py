"""The DuckDB file: opening it, its schema's migrations, retention, snapshots and checkpoints."""
