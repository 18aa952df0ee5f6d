"""Serving load generator: TTFT, ITL, throughput and goodput of any OpenAI-compatible endpoint.

`python -m benchmarks.loadgen --help` runs a sweep; `python -m benchmarks.loadgen.compare`
merges the result files of several systems into a table and plots.
"""
