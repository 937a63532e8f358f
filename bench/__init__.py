"""Benchmarks for the screening package (run with ``make bench`` or ``python -m bench``)."""
