"""The one settings object. Every field can be set by a `KGREPORT_<FIELD>` environment variable."""

from __future__ import annotations

import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kgreport.indexing.options import IngestOptions
from kgreport.retrieval.config import ImagingConfig, IndexParams, SearchConfig
from kgreport.retrieval.ids import check_id, is_valid_id

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGING_SUFFIX = ".rebuild~"  # outside the id rule (`~`), so a rebuild's staging copy is never an index name


def _default_data_dir() -> Path:
    """`./.kgreport` when the working folder has one (a project-local set-up), else `~/.kgreport`."""
    local = Path.cwd() / ".kgreport"
    return local if local.is_dir() else Path.home() / ".kgreport"


class Settings(BaseSettings):
    """Where data lives, which models to load, and search/index defaults."""

    model_config = SettingsConfigDict(env_prefix="KGREPORT_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir, description="indexes, caches, graph data")
    bundled_data_dir: Path = Field(default=REPO_ROOT / "data", description="demo archive and shipped weights")
    image_encoder: str = Field(
        default="", description="CT encoder folder or open_clip checkpoint folder; empty = the bundled trained encoder"
    )
    text_encoder: str = Field(default="", description="sentence-transformers folder; empty = packaged MiniLM")
    exact_search_threshold: int = Field(
        default=IndexParams.exact_threshold, ge=1, description="below: exact search; above: IVF"
    )
    ivf_nprobe: int = Field(default=IndexParams.nprobe, ge=1)
    volume_slices: int = Field(
        default=ImagingConfig.volume_slices, ge=1, le=64, description="axial slices sampled per 3D volume"
    )
    ct_window: str | None = Field(default=None, description="window preset for CT volumes (lung, bone, ...)")
    hybrid_image_weight: float = Field(
        default=SearchConfig.image_weight,
        ge=0.0,
        le=1.0,
        description="weight of image similarity in hybrid image+text queries",
    )
    query_expansion: int = Field(
        default=SearchConfig.query_expansion,
        ge=0,
        le=50,
        description="rescore image-query candidates with the query plus its M best neighbours",
    )
    case_pooling: bool = Field(
        default=SearchConfig.case_pooling,
        description="rank cases by their pooled images rather than their best image (image queries)",
    )
    vote_by: str = Field(
        default=SearchConfig.vote_by, pattern="^(image|case)$", description="label vote per image or per case"
    )
    head_weight: float = Field(
        default=SearchConfig.head_weight,
        ge=0.0,
        le=1.0,
        description="weight of the encoder's heads in the predicted modality and region",
    )
    query_cache_size: int = Field(
        default=SearchConfig.cache_size,
        ge=0,
        description="query embeddings kept in memory (repeated uploads and texts); 0 = off",
    )
    coalesce_queries: bool = Field(
        default=SearchConfig.coalesce,
        description="embed concurrent queries together on one model thread per encoder (a service)",
    )
    leakage_guard: bool = Field(
        default=SearchConfig.leakage_guard, description="never return the query's own case or patient"
    )
    ingest_batch_cases: int = Field(default=IngestOptions.batch_cases, ge=1)
    index_findings: bool = Field(
        default=True, description="at index time, write each report's findings into the ontology graph"
    )
    nlp_base: str = Field(
        default="blank",
        description="spaCy base for finding extraction: 'blank' English (as good as en_core_web_sm on the gold "
        "set, 1.6x faster; see benchmarks/results/extraction_quality.json) or 'en_core_web_sm'",
    )
    device: str = Field(
        default="auto",
        pattern="^(auto|cpu|cuda)$",
        description="where the encoders, the report writer and (with faiss-gpu installed) vector search run: "
        "auto (CUDA when torch sees a GPU), cpu or cuda",
    )
    llm: str = Field(default="", description="base LLM: local model folder or .gguf; empty = packaged SmolLM2-135M")
    report_generator: str = Field(
        default="", description="trained report-writer folder; empty = the bundled one under data/models/"
    )
    report_int8: bool = Field(
        default=False,
        description="run the report writer's LLM with int8 linear layers: about 2x faster decoding on CPU, but "
        "it loses much of what the LoRA adapters learned (see benchmarks/results/report_speed.json)",
    )
    notes_with_llm: bool | None = Field(
        default=None,
        description="notes mode: let the LLM refine the notes (true) or write each notes item out by rule (false); "
        "unset = the writer's writer.json (the bundled writer: false, as its LLM added 7 s a report and no recall "
        "on hand-written notes, see benchmarks/results/notes_quality.json)",
    )
    api_keys: str = Field(
        default="", description="comma-separated API keys; when set, every /v1 route needs one in X-API-Key"
    )
    cors_origins: str = Field(
        default="",
        description="comma-separated origins (https://ris.example.org) whose pages may call the REST API from a "
        "browser; empty (the default) = none: the API answers no CORS preflight, so only the bundled page, "
        "served from the API's own origin, can use it",
    )
    max_upload_mb: float = Field(default=64.0, gt=0, description="largest accepted upload, in MB")
    max_images_per_case: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="most images one case may carry when it is added alone (POST /v1/indexes/NAME/cases, "
        "`kgreport index add`); more: 422 too_many_images, nothing stored. A volume (a DICOM series, a NIfTI) "
        "counts as one image",
    )
    max_image_megapixels: float = Field(
        default=ImagingConfig.max_pixels / 1e6,
        gt=0,
        description="largest 2D picture (PNG, JPEG, ...) decoded, in megapixels; larger: 422",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="`kgreport serve` worker processes: each loads its own models (about 1 GB, 2.5 GB once it "
        "has written a report) and serves requests on its own core",
    )
    archive_roots: str = Field(
        default="",
        description="folders (separated by ':') whose archives POST /v1/indexes may read; empty = the bundled "
        "data and <data_dir>/archives",
    )
    dicomweb_username: str = Field(default="", description="PACS (DICOMweb) HTTP basic auth user; never in the URL")
    dicomweb_password: SecretStr = Field(default=SecretStr(""), description="PACS HTTP basic auth password")
    dicomweb_token: SecretStr = Field(default=SecretStr(""), description="PACS bearer token (instead of basic auth)")
    dicomweb_verify_tls: bool = Field(default=True, description="verify the PACS's TLS certificate (https)")
    dicomweb_ca_bundle: str = Field(default="", description="CA bundle file for the PACS's certificate")
    dicomweb_timeout: float = Field(default=60.0, gt=0, description="seconds per PACS request")
    patient_id_salt: SecretStr = Field(
        default=SecretStr(""),
        description="salt of the hashed patient ids of PACS studies; empty = one made for the data dir and kept "
        "in <data_dir>/patient-id.salt",
    )
    neo4j_uri: str = Field(default="", description="bolt:// or neo4j:// URI; empty = embedded FalkorDB")
    neo4j_user: str = "neo4j"
    neo4j_password: str = ""
    neo4j_database: str | None = None
    falkordb_url: str = Field(
        default="",
        description="redis://HOST:PORT (rediss:// for TLS) of a running FalkorDB server that every replica shares; "
        "empty = embedded FalkorDB in the data dir. No credentials in the URL: the password is its own setting",
    )
    falkordb_password: SecretStr = Field(default=SecretStr(""), description="password of the FalkorDB server")
    case_store: str = Field(
        default="",
        pattern=r"^(|milvus://.+)$",
        description="where indexes live: empty = FAISS + SQLite folders in the data dir (one machine); "
        "milvus://HOST:PORT = collections on a Milvus server that several replicas share",
    )
    milvus_token: SecretStr = Field(default=SecretStr(""), description="Milvus API token (or user and password)")
    milvus_user: str = ""
    milvus_password: SecretStr = Field(default=SecretStr(""), description="Milvus password")
    milvus_timeout: float = Field(default=10.0, gt=0, description="seconds one Milvus call may take")
    milvus_consistency: str = Field(
        default="Strong",
        pattern="^(Strong|Session|Bounded|Eventually)$",
        description="Milvus read consistency: Strong (default) sees every replica's finished writes at once "
        "(searches by the timestamp the write lease records, other reads strong); the others make every read "
        "that level, which may lag other replicas",
    )
    write_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="with the case store on Milvus: how long a replica's write lease on an index lasts "
        "unrenewed, so a build of a replica that died can be resumed by another after at most this long",
    )
    shared_dir: Path | None = Field(
        default=None,
        description="a folder every replica mounts (NFS or similar): images uploaded with cases, and job "
        "records; empty = the data dir (one machine)",
    )

    @field_validator("data_dir", "bundled_data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @field_validator("shared_dir", mode="before")
    @classmethod
    def _expand_shared(cls, value: object) -> Path | None:
        return Path(str(value)).expanduser() if value not in (None, "") else None

    @property
    def shared_root(self) -> Path:
        """What replicas share on disk (uploaded case images, job records): `shared_dir`, else the data dir."""
        return self.shared_dir or self.data_dir

    def patient_salt(self) -> bytes:
        """The salt of hashed patient ids: the setting, else one made once for this data dir and kept there
        (mode 0600; made with a hard link, so two processes starting at once agree on one salt)."""
        given = self.patient_id_salt.get_secret_value()
        if given:
            return given.encode("utf-8")
        path = self.data_dir / "patient-id.salt"
        if not path.is_file():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.data_dir, delete=False) as handle:
                handle.write(secrets.token_hex(32).encode())
            os.chmod(handle.name, 0o600)
            try:
                os.link(handle.name, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                os.unlink(handle.name)
        return path.read_bytes().strip()

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1e6)

    def imaging_config(self) -> ImagingConfig:
        """How query and archive images are decoded and embedded."""
        return ImagingConfig(volume_slices=self.volume_slices, window=self.ct_window, max_pixels=self.max_image_pixels)

    def search_config(self) -> SearchConfig:
        """How every index's searcher answers (`retrieval.search.CaseSearcher`)."""
        return SearchConfig(
            image_weight=self.hybrid_image_weight,
            leakage_guard=self.leakage_guard,
            query_expansion=self.query_expansion,
            vote_by=self.vote_by,
            head_weight=self.head_weight,
            case_pooling=self.case_pooling,
            cache_size=self.query_cache_size,
            coalesce=self.coalesce_queries,
            imaging=self.imaging_config(),
        )

    def index_params(self) -> IndexParams:
        """The vector indexes' search structure (exact below a size, IVF above)."""
        return IndexParams(exact_threshold=self.exact_search_threshold, nprobe=self.ivf_nprobe, device=self.device)

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def allowed_archive_roots(self) -> list[Path]:
        roots = [Path(r).expanduser() for r in self.archive_roots.split(":") if r.strip()]
        return [r.resolve() for r in roots or [self.bundled_data_dir, self.data_dir / "archives"]]

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"

    def index_dir(self, name: str) -> Path:
        """Folder of the named index; names are plain identifiers so they can never escape data_dir."""
        return self.indexes_dir / check_id(name, "index name")

    def index_names(self) -> list[str]:
        """The indexes under the data dir (not the hidden staging copies an index rebuild works in)."""
        if not self.indexes_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.indexes_dir.iterdir() if is_valid_id(p.name) and (p / "manifest.json").is_file()
        )

    def index_uploads_dir(self, name: str) -> Path:
        """Images the service received for the cases of index `name` (the index's images point here)."""
        self.index_dir(name)  # the same name check
        return self.shared_root / "uploads" / "indexes" / name

    @property
    def query_uploads_dir(self) -> Path:
        """Query images the service received, each kept for its request's length."""
        return self.data_dir / "uploads" / "queries"

    @property
    def default_image_encoder(self) -> Path:
        return self.bundled_data_dir / "models" / "ct-encoder"

    @property
    def report_generator_dir(self) -> Path:
        if self.report_generator:
            return Path(self.report_generator).expanduser()
        return self.bundled_data_dir / "models" / "report-writer"

    @property
    def ontology_dir(self) -> Path:
        return self.bundled_data_dir / "ontology"

    @property
    def demo_archive(self) -> Path:
        return self.bundled_data_dir / "demo"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
