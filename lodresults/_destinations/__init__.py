"""Destinations: the SQLite store, Arrow tables and Parquet files."""
