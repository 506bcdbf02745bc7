"""Evaluation: metrics from the libraries users trust, the listening check, and one model's evaluation."""
