"""Reading studies straight from a hospital PACS over DICOMweb (QIDO-RS to find, WADO-RS to fetch).

`indexing.pacs.client` is the network layer (a typed wrapper over `dicomweb-client` whose failures
are `PacsError`s naming the server, never the credentials); `deidentify` and `structured_report`
turn what it fetches into what is kept: de-identified instances and the text of SR reports.
"""
