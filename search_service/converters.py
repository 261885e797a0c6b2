"""Protobuf messages <-> the search domain (index entries, queries, results)."""

from __future__ import annotations

import base64
import binascii
import logging

from lwdock.common.v1 import learnware_pb2
from lwdock.converters import rkme_from_proto, statistical_spec_from_proto
from lwdock.errors import InvalidArgument, LwdockError
from lwdock.registry.v1 import resources_pb2 as registry_resources_pb2
from lwdock.rkme.spec import RKMESpec
from lwdock.search.v1 import resources_pb2, search_service_pb2
from search_service.index import LearnwareEntry, SearchRequest, SearchResult
from search_service.semantic import SemanticQuery, SemanticRecord

log = logging.getLogger("lwdock.search")

_PAGE_TOKEN_PREFIX = "o:"


# Largest mixture a request may ask for: each member costs a greedy step over the candidate
# pool (max_mixture^2 learnwares re-ranked exactly), so the bound keeps one request cheap.
MAX_MIXTURE = 10


def semantic_record(learnware: learnware_pb2.Learnware) -> SemanticRecord:
    semantic = learnware.semantic_specification
    return SemanticRecord(
        data_type=semantic.data_type,
        task=semantic.task,
        library=semantic.library,
        scenarios=tuple(semantic.scenarios),
        license=semantic.license,
        name=semantic.name,
        description=semantic.description,
    )


def learnware_entry(learnware: learnware_pb2.Learnware) -> LearnwareEntry | None:
    """The index entry of an ACTIVE learnware; None for any other state. A specification that
    cannot be decoded is left out (logged): the learnware stays semantically searchable."""
    if learnware.state != learnware_pb2.LEARNWARE_STATE_ACTIVE:
        return None
    specs: list[RKMESpec] = []
    for spec in learnware.specifications:
        if not spec.rkme.HasField("z"):
            continue
        try:
            specs.append(rkme_from_proto(spec.rkme, spec.name or "specification"))
        except LwdockError as exc:
            log.warning(
                "specification left out of the index",
                extra={"specification": spec.name, "error": str(exc)},
            )
    return LearnwareEntry(learnware.learnware_id, semantic_record(learnware), tuple(specs))


def change_to_domain(
    event: registry_resources_pb2.ChangeEvent,
) -> tuple[int, str, LearnwareEntry | None]:
    """(sequence, learnware id, entry or None) of one change-feed event."""
    learnware_id = event.snapshot.learnware_id or event.learnware.rsplit("/", 1)[-1]
    entry = None
    if event.type != registry_resources_pb2.CHANGE_TYPE_DELETED:
        entry = learnware_entry(event.snapshot)
    return event.sequence, learnware_id, entry


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{_PAGE_TOKEN_PREFIX}{offset}".encode()).decode()


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith(_PAGE_TOKEN_PREFIX):
            raise ValueError(text)
        offset = int(text[len(_PAGE_TOKEN_PREFIX) :])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.for_field("page_token", "not a token this service issued") from None
    if offset < 0:
        raise InvalidArgument.for_field("page_token", "not a token this service issued")
    return offset


def search_request(request: search_service_pb2.SearchLearnwaresRequest) -> SearchRequest:
    query = request.semantic_query
    spec = (
        statistical_spec_from_proto(request.statistical_specification, "statistical_specification")
        if request.HasField("statistical_specification")
        else None
    )
    if request.page_size < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    if not 0 <= request.max_mixture <= MAX_MIXTURE:
        raise InvalidArgument.for_field(
            "max_mixture", f"must be 0 (default 5) to {MAX_MIXTURE}, got {request.max_mixture}"
        )
    return SearchRequest(
        semantic=SemanticQuery(
            data_types=tuple(query.data_types),
            tasks=tuple(query.tasks),
            libraries=tuple(query.libraries),
            scenarios=tuple(query.scenarios),
            licenses=tuple(query.licenses),
            text=query.text,
            learnware_id=query.learnware_id,
        ),
        spec=spec,
        page_size=request.page_size,
        offset=decode_page_token(request.page_token),
        max_mixture=request.max_mixture or 5,
    )


def search_response(
    result: SearchResult, request: SearchRequest, sequence: int
) -> search_service_pb2.SearchLearnwaresResponse:
    response = search_service_pb2.SearchLearnwaresResponse(
        single_results=[
            resources_pb2.SingleResult(
                learnware_id=hit.learnware_id,
                mmd2=hit.mmd2,
                score=hit.score,
                similarity=hit.similarity,
            )
            for hit in result.singles
        ],
        candidate_count=result.candidate_count,
        empty_reason=result.empty_reason,
        index_sequence=sequence,
    )
    if result.mixture is not None:
        response.mixture.CopyFrom(
            resources_pb2.MixtureResult(
                learnware_ids=list(result.mixture.learnware_ids),
                weights=list(result.mixture.weights),
                mmd2=result.mixture.mmd2,
                score=result.mixture.score,
                similarity=result.mixture.similarity,
            )
        )
    if result.has_more:
        response.next_page_token = encode_page_token(request.offset + len(result.singles))
    return response
