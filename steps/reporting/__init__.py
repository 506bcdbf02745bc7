"""Reporting: the comparison of methods (significance, listening), the paper-settings table, markdown, plots."""
