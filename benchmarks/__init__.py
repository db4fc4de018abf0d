"""Reproducible quality and speed measurements: `python -m kgreport.benchmarks.NAME` (JSON in results/)."""

# One import name: this folder is `kgreport.benchmarks` (`kgreport/benchmarks` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.benchmarks":
    raise ImportError(f"import kgreport.benchmarks, not {__name__} (kgreport's packages live under one name)")
