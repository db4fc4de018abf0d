"""The report writer: evidence, drafts, the adapter-tuned LLM refiner, the post-check, the differential."""

# One import name: this folder is `kgreport.generator` (`kgreport/generator` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.generator":
    raise ImportError(f"import kgreport.generator, not {__name__} (kgreport's packages live under one name)")
