"""What can go wrong reading a PACS, by kind: a PACS error answers 502 (the PACS, not the request, is at
fault); a query or URL that cannot be asked is the request's fault (422)."""

from __future__ import annotations

from kgreport.errors import InvalidInput, UpstreamFailed
from kgreport.indexing.archives.base import ArchiveError


class PacsQueryError(InvalidInput):
    """A PACS query that cannot be asked: a malformed date, `since` after `until`, a modality that is no code."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)


class PacsUrlError(ArchiveError):
    """A PACS URL that names no PACS: unparsable, another scheme, no host, credentials or a query in it."""

    code = "bad_pacs_url"


class PacsError(UpstreamFailed, ArchiveError):
    """The PACS cannot be read (a bad URL or settings, or an answer that cannot be used)."""

    code = "pacs_error"


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401 or 403)."""

    code = "pacs_auth_failed"


class PacsUnavailableError(PacsError):
    """The PACS could not be reached or did not answer in time, or answered with a server error (5xx)."""

    code = "pacs_unavailable"


class NotDicomWebError(PacsError):
    """Something answered at the URL, but not as a DICOMweb service (wrong path, wrong server)."""

    code = "not_dicomweb"
