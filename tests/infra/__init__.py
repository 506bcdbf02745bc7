"""Infrastructure tests: the real Prefect API and worker, an MLflow server, a DVC remote, the dependency sets."""
