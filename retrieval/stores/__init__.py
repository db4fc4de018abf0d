"""Where an index's cases and vectors live: the protocol every case store meets (`interface`), the scope
of a search (`scope`), and its two backends: `local` (SQLite + FAISS folders, one machine) and `milvus`
(collections on a Milvus server that several replicas share)."""
