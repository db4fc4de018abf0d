"""Image and volume decoding, the encoders, the case stores and similar-case search."""

# One import name: this folder is `kgreport.retrieval` (`kgreport/retrieval` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.retrieval":
    raise ImportError(f"import kgreport.retrieval, not {__name__} (kgreport's packages live under one name)")
