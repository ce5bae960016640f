"""proxymeter agent: tails proxy logs, aggregates per-minute stats, ships them to the collector."""
