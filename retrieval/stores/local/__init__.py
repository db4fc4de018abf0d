"""The local case store: cases in SQLite, their vectors mirrored in FAISS files, one folder per index."""
