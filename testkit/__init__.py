"""Helpers the tests and the benchmarks share: real servers started and waited on (FalkorDB, Milvus, Orthanc),
DICOM studies made for a PACS, and decompression bombs. Not installed: importable from the repository root.
"""

# One import name: this folder is `kgreport.testkit` (`kgreport/testkit` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.testkit":
    raise ImportError(f"import kgreport.testkit, not {__name__} (kgreport's packages live under one name)")
