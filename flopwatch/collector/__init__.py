"""The flopwatch collector: verify, deduplicate, aggregate per job, alert, serve metrics."""
