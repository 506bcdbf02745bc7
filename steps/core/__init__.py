"""Shared infrastructure: the typed params.yaml config, atomic file writes, MLflow tracking and registry."""
