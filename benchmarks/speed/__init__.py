"""Speed and memory of the packages' hot paths; each module has a ``measure()`` (see
:mod:`benchmarks` for the modules and their commands)."""
