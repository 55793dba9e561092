"""Prefect flows: thin wrappers around the matflow library (retries, caching, artifacts)."""
