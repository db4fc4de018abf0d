"""The front ends: the FastAPI service, the CLI and the web page, over the layers below."""

# One import name: this folder is `kgreport.api` (`kgreport/api` links here). Imported by its bare folder
# name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.api":
    raise ImportError(f"import kgreport.api, not {__name__} (kgreport's packages live under one name)")
