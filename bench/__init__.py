"""Reproducible benchmarks: the edge side by side with nginx static and the bare ASGI server.

``bench/run`` (or ``python -m bench``) starts every process it measures on loopback, pins
servers to one core and ``wrk`` to the other, interleaves rounds, reports medians and ratios,
and writes the table with the machine, versions and command to ``bench/results/``.
"""
