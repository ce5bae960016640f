"""proxymeter collector: ingests per-minute rows from agents, stores them, serves the analytics API."""
