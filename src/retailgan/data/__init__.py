"""Data: schemas, ingestion into the DuckDB store, datasets and splits."""
