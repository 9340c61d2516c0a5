"""Benchmarks users run: the machine card (``machine``), eager timing (``timing``), the
report over pytest-benchmark's JSON (``report``) and ``bench recommend`` (``recommend``)."""
