"""The index registry on a Milvus server, and each index's collections: create, list, drop, swap.

One row of the collection `kgreport_indexes` per index holds its manifest and write generation; an index
exists once its row is written (its collections are made first, so a create cut short leaves no index,
and the next create drops what it left). `swap_in` makes a rebuilt copy the index under the old name.
"""

from __future__ import annotations

from typing import Any

from retrieval.case_store import IndexNotFoundError
from retrieval.milvus_connection import REGISTRY, MilvusConnection, collection_base
from retrieval.milvus_filters import text_list
from retrieval.milvus_schema import case_schema, image_schema, registry_schema, vector_index
from retrieval.vector_index import IndexParams

MAX_INDEXES = 16_384  # one query's worth of registry rows


def collections_of(name: str) -> tuple[str, str]:
    """(images collection, cases collection) of the index `name`."""
    base = collection_base(name)
    return f"{base}_images", f"{base}_cases"


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


def registry_row(connection: MilvusConnection, name: str) -> dict[str, Any] | None:
    """The index's registry row (name, manifest, generation), or None when there is no such index."""
    _ensure_registry(connection)
    rows = connection.query(REGISTRY, text_list("name", [name]), ["name", "manifest", "generation"])
    return rows[0] if rows else None


def write_registry(connection: MilvusConnection, name: str, manifest: dict[str, Any], generation: int) -> None:
    row = {"name": name, "manifest": manifest, "generation": int(generation), "unused": [0.0, 0.0]}
    connection.call("writing the index registry", connection.client.upsert, REGISTRY, [row])


def index_names(connection: MilvusConnection) -> list[str]:
    _ensure_registry(connection)
    return sorted(str(r["name"]) for r in connection.query(REGISTRY, 'name != ""', ["name"], limit=MAX_INDEXES))


def _drop_collection(connection: MilvusConnection, collection: str) -> None:
    if connection.call("listing collections", connection.client.has_collection, collection):
        connection.admin(f"dropping {collection}", connection.client.drop_collection, collection)


def create_collections(
    connection: MilvusConnection, name: str, image_dim: int, text_dim: int, params: IndexParams
) -> None:
    """The index's two collections, empty, exact-search indexed and loaded (any left from before dropped)."""
    images, cases = collections_of(name)
    for collection, schema in ((images, image_schema(image_dim)), (cases, case_schema(text_dim))):
        _drop_collection(connection, collection)
        index = vector_index(connection.client, "flat", 0, params)
        connection.admin(
            f"creating {collection}", connection.client.create_collection, collection, schema=schema, index_params=index
        )


def drop_index(connection: MilvusConnection, name: str) -> bool:
    """Delete the index: its registry row first (so it stops existing at once), then its collections."""
    if registry_row(connection, name) is None:
        return False
    connection.call("deleting the registry row", connection.client.delete, REGISTRY, filter=text_list("name", [name]))
    for collection in collections_of(name):
        _drop_collection(connection, collection)
    return True


def swap_in(connection: MilvusConnection, staging: str, name: str) -> None:
    """Make the index `staging` the index `name`: drop `name`'s collections, rename `staging`'s to them,
    then register the result under `name` with `staging`'s manifest (a new creation time, so every
    replica opens it anew). Reads of `name` fail for the moment between drop and rename."""
    row = registry_row(connection, staging)
    if row is None:
        raise IndexNotFoundError(f"index {staging!r} not found on {connection.url}")
    for source, target in zip(collections_of(staging), collections_of(name), strict=True):
        _drop_collection(connection, target)
        connection.admin(f"renaming {source}", connection.client.rename_collection, source, target)
    write_registry(connection, name, dict(row["manifest"]), int(row["generation"]))
    connection.call(
        "deleting the registry row", connection.client.delete, REGISTRY, filter=text_list("name", [staging])
    )
