"""Helpers the tests and the benchmarks share: real servers started and waited on (FalkorDB, Milvus, Orthanc),
DICOM studies made for a PACS, and decompression bombs. Not installed: importable from the repository root.
"""
