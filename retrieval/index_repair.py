"""Repairing an index from what its files still hold: FAISS rebuilt from SQLite, a manifest rewritten
only from what can be known (`retrieval.index_check` says what is wrong first)."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgreport.json_types import JsonObject
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.index_check import DIM_KEYS, FAISS_FILES, CheckState, IndexCheck, check_index, inspect_index
from kgreport.retrieval.manifest import FORMAT_VERSION, IndexManifest, IndexNotFoundError, IndexUnreadableError
from kgreport.retrieval.stores.local.store import CaseStore
from kgreport.retrieval.stores.local.write_lock import index_write_lock


@dataclass
class IndexRepair:
    """What `repair_index` did (`actions`) and what it could not recover, with why (`unrecoverable`);
    `before` and `after` are the checks around it (`after` is `before` when nothing was changed)."""

    before: IndexCheck
    after: IndexCheck
    actions: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the index passes its check now."""
        return self.after.ok

    def as_json(self) -> JsonObject:
        return {
            "ok": self.ok,
            "actions": self.actions,
            "unrecoverable": self.unrecoverable,
            "before": self.before.as_json(),
            "after": self.after.as_json(),
        }


def repair_index(
    root: Path, params: IndexParams | None = None, *, image_encoder: Any = None, text_encoder: Any = None
) -> IndexRepair:
    """Rebuild the FAISS files of the index in `root` from SQLite and save them (each written beside its old
    one, then renamed over it; the manifest's generation last), under the index's writer lock
    (`IndexBusyError` while another writer holds it).

    A database that is missing, empty, corrupt or emptied is not touched, nor is anything else: it is the
    only copy of the reports, and FAISS holds vectors only. A missing or unreadable manifest is rewritten
    only from what can be known: the format, the dimensions of the stored vectors, and the encoders the
    caller names (`image_encoder`/`text_encoder`: anything with `.name` and `.dim`, as for
    `CaseStore.create_for`), since nothing else records them; without them it is left as it is.
    """
    root = Path(root)
    if not root.is_dir():
        raise IndexNotFoundError(f"{root}: no index here")
    with index_write_lock(root, root.name):
        before, state = inspect_index(root)
        repair = IndexRepair(before=before, after=before)
        if not state.database_readable:
            repair.unrecoverable.append(_lost_database(before))
            return repair
        if state.manifest_fault and not _rewrite_manifest(root, state, image_encoder, text_encoder, repair):
            return repair
        try:
            store = CaseStore.open(root, params)
        except (IndexUnreadableError, ValueError, sqlite3.Error) as err:
            repair.unrecoverable.append(f"the index cannot be opened ({err}); nothing more was changed")
            repair.after = check_index(root)
            return repair
        with store:
            store.rebuild_faiss()
            store.flush()
            counts, generation = (len(store.image_index), len(store.text_index)), store.generation()
        repair.actions.append(
            f"image.faiss, text.faiss: rebuilt from store.sqlite ({counts[0]} image and {counts[1]} report vectors) "
            f"and saved at generation {generation}"
        )
        if state.flushed is not None and state.generation is not None and state.generation < state.flushed:
            repair.unrecoverable.append(
                f"store.sqlite: what was written after generation {state.generation} (the FAISS files were at "
                f"{state.flushed}) is not in it and cannot be recovered from FAISS, which holds vectors only: "
                "add those cases again, or rebuild the index from its archive"
            )
        repair.after = check_index(root)
    return repair


def _lost_database(check: IndexCheck) -> str:
    held = [f"{check.facts[f'{s}_vectors']} {s}" for s in FAISS_FILES if f"{s}_vectors" in check.facts]
    vectors = f" ({' and '.join(held)} vectors)" if held else ""
    return (
        "store.sqlite: cannot be repaired, and cannot be recovered from the FAISS files: they hold vectors only"
        f"{vectors}, not the cases, reports or image paths. Nothing was changed. Restore store.sqlite from a "
        "backup, or delete the index and build it again from its archive"
    )


def _rewrite_manifest(
    root: Path, state: CheckState, image_encoder: Any, text_encoder: Any, repair: IndexRepair
) -> bool:
    """Write a manifest from what can be known, keeping the old file as manifest.json.broken; False (and why,
    in `repair.unrecoverable`) when that is not enough."""
    path = root / "manifest.json"
    old = state.manifest or {}
    if state.manifest_fault == "version":
        found = old.get("format_version")
        repair.unrecoverable.append(f"manifest.json: index format {found!r}, not this kgreport's; nothing was changed")
        return False
    if state.manifest_fault == "dims":
        repair.unrecoverable.append(
            "manifest.json: its dimensions differ from the stored vectors', so which encoders made them is unknown; "
            "nothing was changed: rebuild the index from its archive"
        )
        return False
    given = {"image": image_encoder, "text": text_encoder}
    manifest: JsonObject = {**old, "format_version": FORMAT_VERSION}
    lacking, named = [], []
    for space, key in DIM_KEYS.items():
        encoder = given[space]
        dim = state.stored_dims.get(space) or state.faiss_dims.get(space) or getattr(encoder, "dim", None)
        if encoder is not None and dim != encoder.dim:
            repair.unrecoverable.append(
                f"manifest.json: the given {space} encoder makes {encoder.dim}-d vectors, the index's are {dim}-d; "
                "nothing was changed"
            )
            return False
        name = old.get(f"{space}_encoder")
        if not isinstance(name, str) or not name:
            name = getattr(encoder, "name", None)
            named.append(space)
        if not dim or not name:
            lacking.append(f"the {space} encoder")
        manifest[key], manifest[f"{space}_encoder"] = dim, name
    if lacking:
        repair.unrecoverable.append(
            f"manifest.json: {' and '.join(lacking)} cannot be derived: only the manifest records which encoders "
            "made the vectors, not store.sqlite or the FAISS files. Nothing was changed. Restore manifest.json from "
            "a backup, or repair naming the encoders the index was built with"
        )
        return False
    if "image" in named and getattr(image_encoder, "fingerprint", None):
        manifest["image_encoder_fingerprint"] = image_encoder.fingerprint
    manifest["faiss_generation"] = 0  # set by the flush that follows
    kept = ""
    if path.is_file():
        shutil.copyfile(path, root / "manifest.json.broken")
        kept = "; the old file was kept as manifest.json.broken"
    IndexManifest.from_json(manifest, str(path)).save(path)  # checked as every manifest is read
    source = f"{' and '.join(named)} named by the caller" if named else "from the old file"
    repair.actions.append(
        f"manifest.json: rewritten with {manifest['image_dim']}-d image and {manifest['text_dim']}-d text vectors "
        f"(as stored) and encoders {manifest['image_encoder']!r}/{manifest['text_encoder']!r} ({source}){kept}"
    )
    return True
