"""Where the indexes live: the one factory over both case-store backends and both kinds of write lock."""
