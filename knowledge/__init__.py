"""The ontology graph (RadLex, OIFM, the diagnosis knowledge base), finding extraction and grounding."""

# One import name: this folder is `kgreport.knowledge` (`kgreport/knowledge` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.knowledge":
    raise ImportError(f"import kgreport.knowledge, not {__name__} (kgreport's packages live under one name)")
