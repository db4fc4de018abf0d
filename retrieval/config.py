"""The retrieval layer's configuration records: the one place their defaults live.

`usecases.settings.Settings` takes its defaults from these records, composes them from the environment
(`KGREPORT_*`) and passes them down (`Settings.search_config()`, `.index_params()`, `.imaging_config()`);
the constructors and functions below take a record, or a default read from one, never a number of
their own. A test (`tests/test_defaults.py`) scans the packages for a restated default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kgreport.errors import SettingError

VOTE_BY = ("image", "case")


@dataclass(frozen=True)
class ImagingConfig:
    """How a query or archive image is decoded and embedded."""

    volume_slices: int = 8  # axial slices sampled (and embedded) per 3D volume
    window: str | None = None  # CT window preset for volumes (lung, bone, ...); None: the encoder's default
    max_pixels: int = 40_000_000  # a larger 2D picture or slice is refused before its pixels are decoded

    def __post_init__(self) -> None:
        if self.volume_slices < 1 or self.max_pixels < 1:
            raise SettingError(f"volume_slices and max_pixels must be at least 1: {self}")


@dataclass
class IndexParams:
    """Search-structure choices of the vector indexes (`retrieval.vector_index`, Milvus)."""

    exact_threshold: int = 20_000  # below: exact IndexFlatIP; at/above: IVF-Flat
    nlist: int | None = None  # IVF lists; None: ≈ 4·√n, clamped to [16, 65536]
    nprobe: int = 64  # IVF lists probed per query (see `retrieval.vector_index`'s docstring)
    train_sample: int = 100_000  # vectors the IVF k-means is trained on, at most
    device: str = "cpu"  # auto, cpu or cuda (KGREPORT_DEVICE): FAISS uses a GPU only with faiss-gpu installed
    # Milvus above the threshold: HNSW (`retrieval.stores.milvus.schema`), chosen by measurement in
    # `benchmarks/milvus_backends.py`: IVF_FLAT, indexed per segment, gave recall@10 0.78-0.86 at 100k.
    hnsw_m: int = 16  # graph links per vector
    hnsw_ef_construction: int = 128  # candidates kept while inserting
    hnsw_ef: int = 64  # candidates kept while searching (at least k)


@dataclass(frozen=True)
class SearchConfig:
    """How a `CaseSearcher` answers: how many cases, how image and text combine, what it may return."""

    k: int = 5  # cases answered when the caller does not say
    image_weight: float = 0.5  # hybrid image+text queries: weight of the image similarity
    text_clip_weight: float = 0.5  # text side of a hybrid query: CLIP text tower versus the sentence encoder
    leakage_guard: bool = True  # never return the query's own case or patient
    query_expansion: int = 0  # rescore image-query candidates with the query plus its M best neighbours
    vote_by: str = "image"  # the modality/region vote: per image or per case
    head_weight: float = 0.0  # weight of the encoder's heads in the predicted modality and region
    case_pooling: bool = False  # rank cases by their pooled images rather than their best image
    cache_size: int = 256  # query embeddings kept in memory; 0 = off
    coalesce: bool = True  # embed concurrent queries together on one model thread per encoder
    imaging: ImagingConfig = field(default_factory=ImagingConfig)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise SettingError(f"k must be at least 1, not {self.k}")
        if self.vote_by not in VOTE_BY:
            raise SettingError(f"vote_by must be one of {', '.join(VOTE_BY)}, not {self.vote_by!r}")
        if self.query_expansion < 0:
            raise SettingError(f"query_expansion must be 0 or more, not {self.query_expansion}")
        if not 0.0 <= self.head_weight <= 1.0:
            raise SettingError(f"head_weight must be within [0, 1], not {self.head_weight}")
        if not 0.0 <= self.image_weight <= 1.0:
            raise SettingError(f"image_weight must be within [0, 1], not {self.image_weight}")
        if self.cache_size < 0:
            raise SettingError(f"cache_size must be 0 or more, not {self.cache_size}")
