"""The synthetic proxy's evidence: training runs on generated data and their tables (see
:mod:`benchmarks` for the modules and their commands)."""
