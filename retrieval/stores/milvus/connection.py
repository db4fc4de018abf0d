"""A connection to a Milvus server (`KGREPORT_CASE_STORE=milvus://HOST:PORT`), its collections and its errors.

Every case store on one Milvus shares one `MilvusConnection`. An index NAME lives in two collections,
`kgreport_<NAME>_images_<TAG>` and `kgreport_<NAME>_cases_<TAG>` (index names may hold `.`, `:` and `-`,
which collection names may not, so those are written as `_xx` hex codes; the tag is new for each copy
of the index, so a rebuild never renames over the copy being read), read and written through the
aliases `kgreport_<NAME>_images_live` and `kgreport_<NAME>_cases_live`, and the registry collection
`kgreport_index_registry` holds its manifest and write generation (`registry.py`).

Consistency is chosen per call. Reads ask for `Strong` consistency by default, so a write through one
replica is seen by the next read through any other; but Milvus answers a strong read only once its time
tick has passed the read's timestamp, so each waits up to `proxy.timeTickInterval` (an empty search took
19 ms here at 10 ms, against 1.5 ms without the wait). So a read may instead be given a *guarantee*: the
Milvus timestamp of the last write it must see. Milvus then answers at once when that write is older than
a tick. Every write ends with a registry insert (`registry.py`), so the timestamp of that insert
(`last_write_ts`) covers all of the write's rows; the caller that holds the index's write lease records
it where the other replicas look (`usecases.stores.write_lease`), and their searches pass it here.
`KGREPORT_MILVUS_CONSISTENCY=Session`, `Bounded` or `Eventually` makes every read that level instead.

Any failure to reach or use the server becomes `CaseStoreUnavailableError` naming the URL (a 503), and
the gRPC channel reconnects by itself once the server is back.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

from kgreport.errors import SettingError, Unavailable

# A Milvus entity as pymilvus hands it over (and takes it in an insert): field name → value, its types set
# by the collection's schema (`schema.py`), which the store's readers follow field by field.
MilvusRow: TypeAlias = dict[str, Any]

log = logging.getLogger(__name__)
T = TypeVar("T")

REGISTRY = "kgreport_index_registry"
LEGACY_REGISTRY = "kgreport_indexes"  # the first registry (rows upserted by name), moved on first use
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
PAGE = 10_000  # rows per query page (Milvus answers at most 16,384 per query)
LOAD_TIMEOUT = 120  # seconds a collection may take to load again after a restart
MAX_NAME_LENGTH = 255  # Milvus's longest collection name (proxy.maxNameLength)
TAG_LENGTH = 12  # hex digits that tell one copy of an index's collections from another
MAX_BASE_LENGTH = MAX_NAME_LENGTH - len("_images_") - TAG_LENGTH  # room for a collection's kind and tag


class CaseStoreUnavailableError(Unavailable, RuntimeError):
    """The case store's server cannot be reached or refused a request."""

    code = "case_store_unavailable"


def is_milvus_url(value: str) -> bool:
    return value.startswith("milvus://")


def collection_base(name: str) -> str:
    """`kgreport_` + the index name with every character outside [A-Za-z0-9] as `_xx` (hex), so that
    distinct index names never share collections. A name whose collections would pass Milvus's name
    length limit gets `kgreport__` + a hash of it instead (`__` never begins a spelled-out name)."""
    base = "kgreport_" + "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in name)
    if len(base) > MAX_BASE_LENGTH:
        return "kgreport__" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return base


@dataclass(frozen=True)
class MilvusSettings:
    """Where the server is and how to log in; from `KGREPORT_CASE_STORE` and `KGREPORT_MILVUS_*`."""

    url: str  # milvus://HOST:PORT
    token: str = ""
    user: str = ""
    password: str = ""
    timeout: float = 10.0
    consistency: str = "Strong"

    def endpoint(self) -> str:
        """http://HOST:PORT for pymilvus, or a ValueError for a URL that cannot be one."""
        parts = urlsplit(self.url)
        if parts.scheme != "milvus" or not parts.hostname:
            raise SettingError(f"KGREPORT_CASE_STORE must look like milvus://HOST:PORT, not {self.url!r}")
        if parts.username or parts.password:
            raise SettingError("put Milvus credentials in KGREPORT_MILVUS_TOKEN or _USER/_PASSWORD, not in the URL")
        if parts.path not in {"", "/"} or parts.query:
            raise SettingError(f"KGREPORT_CASE_STORE takes no path or query: {self.url!r}")
        return f"http://{parts.hostname}:{parts.port or 19530}"


class MilvusConnection:
    """One pymilvus client for one server, with every call's failure turned into a clear error."""

    def __init__(self, settings: MilvusSettings) -> None:
        if settings.consistency not in CONSISTENCY_LEVELS:
            raise SettingError(f"KGREPORT_MILVUS_CONSISTENCY must be one of {', '.join(CONSISTENCY_LEVELS)}")
        self.settings = settings
        self.url = settings.url
        # Whole seconds: pymilvus's retry loop honours an int timeout only (a float one falls back to
        # 75 retries with back-off, over three minutes against a server that is down).
        self.timeout = max(1, math.ceil(settings.timeout))
        self.registry_ready = False  # whether the index registry collection is known to exist
        self.last_write_ts = 0  # the Milvus timestamp of this process's latest registry write (0: none yet)
        endpoint = settings.endpoint()
        from pymilvus import MilvusClient

        with self.errors("connecting"):
            self.client = MilvusClient(
                uri=endpoint,
                token=settings.token,
                user=settings.user,
                password=settings.password,
                timeout=self.timeout,
            )

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn pymilvus and gRPC failures into CaseStoreUnavailableError naming the server."""
        from grpc import RpcError
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except (MilvusException, RpcError) as err:
            message = getattr(err, "message", None) or str(err)
            raise CaseStoreUnavailableError(f"case store at {self.url}: {doing} failed: {message}") from err

    def call(self, doing: str, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`method(*args, **kwargs)` with the connection's timeout, under `errors(doing)`."""
        kwargs.setdefault("timeout", self.timeout)
        with self.errors(doing):
            return method(*args, **kwargs)

    def admin(self, doing: str, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """A call that makes, loads, indexes or drops a collection: these wait for Milvus to finish,
        which takes seconds on a busy server, so they get at least `LOAD_TIMEOUT`."""
        return self.call(doing, method, *args, timeout=max(self.timeout, LOAD_TIMEOUT), **kwargs)

    def note_write(self, collection: str) -> None:
        """Remember the timestamp Milvus gave the latest insert into `collection` (pymilvus keeps it)."""
        from pymilvus.client import ts_utils

        self.last_write_ts = max(self.last_write_ts, int(ts_utils.get_collection_ts(collection) or 0))

    def read(
        self, collection: str, method: Callable[..., T], /, *args: Any, guarantee: int | None = None, **kwargs: Any
    ) -> T:
        """A search or query of `collection`. After a server restart Milvus loads collections again in
        the background, and a read meanwhile fails with "collection not loaded": load it (which waits
        until it is) and ask once more."""
        from pymilvus.exceptions import MilvusException

        kwargs |= self.read_options(guarantee)
        with self.errors(f"reading {collection}"):
            try:
                return method(collection, *args, **kwargs)
            except MilvusException as err:
                if "not loaded" not in str(getattr(err, "message", err)):
                    raise
                log.info("%s: collection %s is not loaded (server restarted?); loading it", self.url, collection)
                self.client.load_collection(collection, timeout=max(self.timeout, LOAD_TIMEOUT))
                return method(collection, *args, **kwargs)

    def read_options(self, guarantee: int | None = None) -> dict[str, object]:
        """A strong read, or, with a `guarantee` (a write's Milvus timestamp), one that sees at least that
        write and waits for no tick; a weaker level in the settings applies to every read."""
        if guarantee is not None and guarantee > 0 and self.settings.consistency == "Strong":
            return {"consistency_level": "Customized", "guarantee_timestamp": guarantee, "timeout": self.timeout}
        return {"consistency_level": self.settings.consistency, "timeout": self.timeout}

    def query(
        self,
        collection: str,
        expression: str,
        fields: list[str],
        limit: int | None = None,
        guarantee: int | None = None,
    ) -> list[MilvusRow]:
        """Rows of `collection` matching `expression` (at most `limit`), as dicts of `fields`."""
        options = {"limit": limit} if limit is not None else {}
        rows = self.read(
            collection, self.client.query, filter=expression, output_fields=fields, guarantee=guarantee, **options
        )
        return [dict(row) for row in rows]

    def query_all(self, collection: str, expression: str, fields: list[str]) -> Iterator[MilvusRow]:
        """Every row matching `expression`, in primary-key order, a page at a time (no 16,384 cap)."""
        last: int | None = None
        while True:
            page_filter = (
                expression if last is None else f"pk > {last}" + (f" and ({expression})" if expression else "")
            )
            rows = sorted(
                self.query(collection, page_filter or "pk >= 0", ["pk", *fields], limit=PAGE), key=lambda r: r["pk"]
            )
            yield from rows
            if len(rows) < PAGE:
                return
            last = int(rows[-1]["pk"])

    def count(self, collection: str, expression: str = "") -> int:
        rows = self.query(collection, expression, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def ping(self) -> str:
        """The server's version: a cheap call that proves it answers (readiness)."""
        return str(self.call("asking the version", self.client.get_server_version))

    def close(self) -> None:
        self.client.close()
