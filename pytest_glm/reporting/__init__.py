"""Reporting a run: one record of figures and outcomes, rendered to the terminal, JSON, JUnit properties
and plots; the comparison with a stored run and with a pytest-benchmark baseline."""
