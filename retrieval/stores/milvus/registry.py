"""The index registry on a Milvus server, and each index's collections: create, list, drop, swap.

The registry collection holds each index's manifest and write generation. It is written by insert and
delete only, never by upsert: Milvus 2.3 implements upsert as a delete and an insert of the same primary
key, and a row written that way was once lost across a server restart here (a replica then answered 404
for an index that existed). So every registry write inserts a new row (a new auto id) and then deletes
every other row of that index (its name, not the new id); a reader takes the row with the highest
generation (ties: the highest id), so a write cut short between the two steps leaves an extra, older
row and nothing wrong. Writes to one index are serialised by the caller's lease, so generations of one
index only grow.

Each copy of an index's collections has its own tag, named in the manifest. An index exists once its
first row is written (its collections are made first, so a create cut short leaves no index, and the
next create drops what it left).

Every read and write goes through the index's two aliases (`<base>_images_live`, `<base>_cases_live`),
not the collections. `swap_in` makes a rebuilt copy the index under the old name by pointing the aliases
at it (one atomic step on the server for each) and then the registry, so every open handle, on every
replica, reads the new copy from its next call on and none ever finds the index without collections;
`retire` drops the copy it replaced a moment later, once reads already under way on it have ended. An
index made before aliases reads its collections by name until its next rebuild.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from kgreport.json_types import JsonObject
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.stores.local.store import IndexNotFoundError
from kgreport.retrieval.stores.milvus.connection import (
    LEGACY_REGISTRY,
    REGISTRY,
    TAG_LENGTH,
    CaseStoreUnavailableError,
    MilvusConnection,
    MilvusRow,
    collection_base,
)
from kgreport.retrieval.stores.milvus.filters import id_list, text_list
from kgreport.retrieval.stores.milvus.schema import case_schema, image_schema, registry_schema, vector_index

log = logging.getLogger(__name__)
ROW_FIELDS = ["pk", "name", "manifest", "generation"]


def collections_of(name: str, manifest: Mapping[str, Any]) -> tuple[str, str]:
    """(images, cases) as reads and writes name them: the index's aliases, or, for an index made before
    aliases, its collections as its manifest names them (untagged, under the name itself, before tags)."""
    named = manifest.get("collections") or {}
    if "images_alias" in named:
        return str(named["images_alias"]), str(named["cases_alias"])
    return _concrete(name, manifest)


def _concrete(name: str, manifest: Mapping[str, Any]) -> tuple[str, str]:
    named = manifest.get("collections")
    if named:
        return str(named["images"]), str(named["cases"])
    base = collection_base(name)
    return f"{base}_images", f"{base}_cases"


def _aliases(name: str) -> dict[str, str]:
    base = collection_base(name)
    return {"images_alias": f"{base}_images_live", "cases_alias": f"{base}_cases_live"}


def _aliases_of(connection: MilvusConnection, collections: Collection[str]) -> set[str]:
    """The aliases on these collections (those that exist)."""
    client, found = connection.client, set()
    for collection in collections:
        if connection.call("listing collections", client.has_collection, collection):
            found |= set(connection.call("listing aliases", client.list_aliases, collection).get("aliases", []))
    return found


def _point_aliases(connection: MilvusConnection, named: Mapping[str, str], existing: Collection[str] = ()) -> None:
    """Point the index's aliases at these collections: move those in `existing` (one atomic step on the
    server each), make the others."""
    client = connection.client
    for kind in ("images", "cases"):
        alias, target = named[f"{kind}_alias"], named[kind]
        if alias in existing:
            connection.admin(f"pointing alias {alias} at {target}", client.alter_alias, target, alias)
        else:
            connection.admin(f"creating alias {alias}", client.create_alias, target, alias)


def _new_collections(name: str) -> dict[str, str]:
    """Names for a new copy of the index's collections: the index's base, the kind, and a fresh tag."""
    base, tag = collection_base(name), uuid.uuid4().hex[:TAG_LENGTH]
    return {"images": f"{base}_images_{tag}", "cases": f"{base}_cases_{tag}"} | _aliases(name)


def _own_collections(connection: MilvusConnection, name: str) -> list[str]:
    """Every collection on the server that belongs to the index `name` (any copy, tagged or not)."""
    pattern = re.compile(re.escape(collection_base(name)) + rf"_(images|cases)(_[0-9a-f]{{{TAG_LENGTH}}})?")
    listed = connection.call("listing collections", connection.client.list_collections)
    return sorted(c for c in listed if pattern.fullmatch(c))


def retire(connection: MilvusConnection, name: str, keep: Collection[str] = ()) -> None:
    """Drop the index's collections other than `keep`: copies a swap replaced, or a create or swap that
    was cut short left behind."""
    for collection in _own_collections(connection, name):
        if collection not in keep:
            _drop_collection(connection, collection)


def _ensure_registry(connection: MilvusConnection) -> None:
    if connection.registry_ready:
        return
    client = connection.client
    if not connection.call("listing collections", client.has_collection, REGISTRY):
        index = vector_index(client, "flat", 0, IndexParams(), field="unused")
        connection.admin(
            "creating the index registry",
            client.create_collection,
            REGISTRY,
            schema=registry_schema(),
            index_params=index,
        )
    connection.registry_ready = True
    _migrate_legacy_registry(connection)


def _migrate_legacy_registry(connection: MilvusConnection) -> None:
    """Copy the rows of the first registry (one upserted row per index, keyed by name) into this one,
    then drop it. Copied before dropped, so a migration cut short is done again at the next start.
    Replicas upgraded together may both copy an index (two equal rows: harmless, the next write keeps
    one); the one that finds the first registry gone under it leaves the rest to the other."""
    client = connection.client
    if not connection.call("listing collections", client.has_collection, LEGACY_REGISTRY):
        return
    try:
        legacy = connection.query(LEGACY_REGISTRY, 'name != ""', ["name", "manifest", "generation"], limit=16_384)
        for row in legacy:
            if not _rows(connection, str(row["name"])):  # else copied by a migration cut short
                write_registry(connection, str(row["name"]), dict(row["manifest"]), int(row["generation"]))
        connection.admin("dropping the old index registry", client.drop_collection, LEGACY_REGISTRY)
    except CaseStoreUnavailableError:
        if connection.call("listing collections", client.has_collection, LEGACY_REGISTRY):
            raise
        return  # another replica finished the move
    log.info("%s: moved %d indexes to the registry %s", connection.url, len(legacy), REGISTRY)


def _rows(connection: MilvusConnection, name: str) -> list[MilvusRow]:
    """Every registry row of the index `name`, newest (highest generation, then id) first."""
    _ensure_registry(connection)
    rows = connection.query(REGISTRY, text_list("name", [name]), ROW_FIELDS)
    return sorted(rows, key=lambda r: (int(r["generation"]), int(r["pk"])), reverse=True)


def _delete_rows(connection: MilvusConnection, rows: list[MilvusRow]) -> None:
    if rows:
        ids = [int(r["pk"]) for r in rows]
        connection.call("deleting registry rows", connection.client.delete, REGISTRY, filter=id_list("pk", ids))


def registry_row(connection: MilvusConnection, name: str) -> MilvusRow | None:
    """The index's newest registry row (pk, name, manifest, generation), or None when there is no such index."""
    rows = _rows(connection, name)
    return rows[0] if rows else None


def write_registry(connection: MilvusConnection, name: str, manifest: JsonObject, generation: int) -> None:
    """Register `manifest` at `generation` as the index's newest row, then delete its older rows (any the
    delete misses are still older, so never read, and go at the next write)."""
    _ensure_registry(connection)
    row = {"name": name, "manifest": manifest, "generation": int(generation), "unused": [0.0, 0.0]}
    inserted = connection.call("writing the index registry", connection.client.insert, REGISTRY, [row])
    connection.note_write(REGISTRY)  # after every row of the write it ends: reads that see it see them all
    older = f"{text_list('name', [name])} and not ({id_list('pk', inserted['ids'])})"
    connection.call("deleting older registry rows", connection.client.delete, REGISTRY, filter=older)


def index_names(connection: MilvusConnection) -> list[str]:
    _ensure_registry(connection)
    return sorted({str(r["name"]) for r in connection.query_all(REGISTRY, "", ["name"])})


def _drop_collection(connection: MilvusConnection, collection: str) -> None:
    """Drop the collection and its aliases (Milvus would keep an alias to a dropped collection)."""
    for alias in _aliases_of(connection, [collection]):
        connection.admin(f"dropping alias {alias}", connection.client.drop_alias, alias)
    if connection.call("listing collections", connection.client.has_collection, collection):
        connection.admin(f"dropping {collection}", connection.client.drop_collection, collection)


def create_collections(
    connection: MilvusConnection, name: str, image_dim: int, text_dim: int, params: IndexParams
) -> dict[str, str]:
    """A new copy of the index's two collections, empty, exact-search indexed and loaded, after dropping
    any a create cut short left, with the index's aliases on them; returns their names for the manifest."""
    retire(connection, name)
    named = _new_collections(name)
    for collection, schema in ((named["images"], image_schema(image_dim)), (named["cases"], case_schema(text_dim))):
        index = vector_index(connection.client, "flat", 0, params)
        connection.admin(
            f"creating {collection}", connection.client.create_collection, collection, schema=schema, index_params=index
        )
    _point_aliases(connection, named)
    return named


def drop_index(connection: MilvusConnection, name: str) -> bool:
    """Delete the index: its registry rows first (so it stops existing at once), then its collections."""
    rows = _rows(connection, name)
    if not rows:
        return False
    _delete_rows(connection, rows)
    retire(connection, name)
    return True


def swap_in(connection: MilvusConnection, staging: str, name: str) -> tuple[str, str]:
    """Make the index `staging` the index `name`: rename `staging`'s collections to a new copy of
    `name`'s, point `name`'s aliases at it, then register it under `name` with `staging`'s manifest (a
    new creation time, so every replica opens it anew) and a generation above both. The copy `name` had
    is left for `retire`, so a read already under way on it ends well. Returns the new collections."""
    staged = _rows(connection, staging)
    if not staged:
        raise IndexNotFoundError(f"index {staging!r} not found on {connection.url}")
    replaced = registry_row(connection, name)
    manifest = dict(staged[0]["manifest"])
    named = _new_collections(name)
    staged_collections = _concrete(staging, manifest)
    for alias in _aliases_of(connection, staged_collections):  # nobody reads the staging copy
        connection.admin(f"dropping alias {alias}", connection.client.drop_alias, alias)
    for source, target in zip(staged_collections, (named["images"], named["cases"]), strict=True):
        connection.admin(f"renaming {source}", connection.client.rename_collection, source, target)
    replaced_collections = _concrete(name, dict(replaced["manifest"])) if replaced else ()
    _point_aliases(connection, named, _aliases_of(connection, replaced_collections))
    generation = max(int(staged[0]["generation"]), int(replaced["generation"]) if replaced else -1) + 1
    write_registry(connection, name, manifest | {"collections": named}, generation)
    _delete_rows(connection, staged)
    return named["images"], named["cases"]
