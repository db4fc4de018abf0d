"""Archive readers (MedPix, manifests, DICOM, NIfTI, DICOMweb), the ingest pipeline, encoder training."""

# One import name: this folder is `kgreport.indexing` (`kgreport/indexing` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.indexing":
    raise ImportError(f"import kgreport.indexing, not {__name__} (kgreport's packages live under one name)")
