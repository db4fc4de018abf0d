"""The use cases: what a user can ask of kgreport (ingest an archive, search, write a report, train the
writer, keep an index in step with a PACS), composed from the layers below and driven alike by every
front end in `kgreport.api` (CLI, REST service, web page).

Here, and only here, the settings become models and stores (`services`), and typed requests become
typed results; the front ends parse input, call one use case and print or serialise what it returns.
"""

# One import name: this folder is `kgreport.usecases` (`kgreport/usecases` links here). Imported by its bare
# folder name as well, its modules would load twice, as two sets of classes and settings.
if __name__ != "kgreport.usecases":
    raise ImportError(f"import kgreport.usecases, not {__name__} (kgreport's packages live under one name)")
