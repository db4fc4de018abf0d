"""The Milvus case store: an index as two collections on a Milvus server, registered by name."""
