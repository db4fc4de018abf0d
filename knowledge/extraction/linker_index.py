"""scispaCy's linker index (TF-IDF character 3-grams + nmslib HNSW), built from our knowledge base.

scispaCy 0.6's own `create_tfidf_ann_index` refuses to run with scipy ≥ 1.11 (it stores the vectors
as float16 sparse matrices, which newer scipy cannot). This writes the same four files, in the layout
`LinkerPaths` reads, with float32 vectors; `EntityLinker.from_kb(kb, ann_index_out_dir=...)` then
finds them cached and loads them. HNSW parameters are smaller than scispaCy's UMLS ones (tens of
thousands of aliases here, not millions), so the build takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

HNSW_PARAMS = {"M": 32, "indexThreadQty": 2, "efConstruction": 200, "post": 0}


def build_linker_index(kb: Any, folder: Path) -> None:
    """Write tfidf_vectorizer.joblib, tfidf_vectors_sparse.npz, concept_aliases.json, nmslib_index.bin."""
    import joblib
    import nmslib
    import scipy.sparse
    from scispacy.candidate_generation import LinkerPaths
    from sklearn.feature_extraction.text import TfidfVectorizer

    folder.mkdir(parents=True, exist_ok=True)
    paths = LinkerPaths.from_directory(folder)
    if paths.is_locally_cached():
        return
    aliases = list(kb.alias_to_cuis.keys())
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=2, dtype=np.float32)
    vectors = vectorizer.fit_transform(aliases)
    keep = np.asarray(vectors.sum(axis=1)).reshape(-1) != 0  # nmslib crashes on all-zero rows
    aliases = [a for a, k in zip(aliases, keep, strict=True) if k]
    vectors = vectors[keep]
    index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
    index.addDataPointBatch(vectors)
    index.createIndex(HNSW_PARAMS, print_progress=False)
    # Write the index last: LinkerPaths treats the folder as complete once all four files exist.
    joblib.dump(vectorizer, paths.tfidf_vectorizer)
    scipy.sparse.save_npz(paths.tfidf_vectors, vectors.astype(np.float32))
    Path(paths.concept_aliases_list).write_text(json.dumps(aliases))
    tmp = f"{paths.ann_index}.tmp"
    index.saveIndex(tmp)
    Path(tmp).replace(paths.ann_index)
