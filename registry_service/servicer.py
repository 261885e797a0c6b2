"""Thin RegistryService servicer: proto -> `RegistryService` (service.py) -> proto.

Errors are `lwdock.errors`; the interceptor maps them to gRPC statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import grpc
from google.protobuf import empty_pb2

from lwdock.common.v1 import learnware_pb2
from lwdock.errors import InvalidArgument
from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc, resources_pb2
from lwdock.semantic import VOCABULARY
from lwdock.semantic.checker import Semantic
from lwdock.server.context import current_principal
from registry_service import converters, uploads
from registry_service.service import (
    SEMANTIC_FIELDS,
    NewPackage,
    RegistryService,
    ReplacedPackage,
    parse_learnware_name,
    parse_report_name,
    parse_semantic,
    parse_specification_name,
    parse_token_name,
)

SHA256_TRAILER = "x-lwdock-sha256"

pb = registry_service_pb2


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(
        self,
        service: RegistryService | None = None,
        *,
        max_package_bytes: int = uploads.MAX_UPLOAD_BYTES,
    ) -> None:
        self.service = service or RegistryService(None, None)
        self.max_package_bytes = max_package_bytes

    # -- learnwares ----------------------------------------------------------------------------

    async def CreateLearnware(
        self,
        request_iterator: AsyncIterable[pb.CreateLearnwareRequest],
        context: grpc.aio.ServicerContext,
    ) -> learnware_pb2.Learnware:
        upload = await uploads.receive(request_iterator, limit=self.max_package_bytes)
        header = upload.header
        which = header.WhichOneof("semantic")
        semantic = parse_semantic(
            header.semantic_specification if which == "semantic_specification" else None,
            header.semantic_specification_json if which == "semantic_specification_json" else None,
            "header",
        )
        row = await self.service.create_learnware(
            current_principal(),
            NewPackage(
                request_id=header.request_id,
                semantic=semantic,
                data=upload.data,
                sha256=upload.sha256,
                content_type=header.content_type or "application/zip",
            ),
        )
        return converters.learnware_to_proto(row)

    async def ReplaceLearnwarePackage(
        self,
        request_iterator: AsyncIterable[pb.ReplaceLearnwarePackageRequest],
        context: grpc.aio.ServicerContext,
    ) -> learnware_pb2.Learnware:
        upload = await uploads.receive(request_iterator, limit=self.max_package_bytes)
        header = upload.header
        row = await self.service.replace_package(
            current_principal(),
            parse_learnware_name(header.name, "header.name"),
            ReplacedPackage(
                request_id=header.request_id,
                data=upload.data,
                sha256=upload.sha256,
                etag=header.etag,
            ),
        )
        return converters.learnware_to_proto(row)

    async def GetUploadStatus(
        self, request: pb.GetUploadStatusRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.UploadStatus:
        done = await self.service.get_upload_status(current_principal(), request.request_id)
        return converters.upload_status_to_proto(done)

    async def GetLearnware(
        self, request: pb.GetLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> learnware_pb2.Learnware:
        row = await self.service.get_learnware(parse_learnware_name(request.name))
        return converters.learnware_to_proto(row)

    async def ListLearnwares(
        self, request: pb.ListLearnwaresRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLearnwaresResponse:
        page = await self.service.list_learnwares(
            current_principal(),
            filter_text=request.filter,
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
            show_deleted=request.show_deleted,
        )
        return pb.ListLearnwaresResponse(
            learnwares=[converters.learnware_to_proto(row) for row in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def UpdateLearnware(
        self, request: pb.UpdateLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> learnware_pb2.Learnware:
        if not request.HasField("learnware"):
            raise InvalidArgument.for_field("learnware", "required")
        learnware_id = parse_learnware_name(request.learnware.name, "learnware.name")
        message = request.learnware.semantic_specification
        set_fields = {
            f
            for f in SEMANTIC_FIELDS
            if (message.HasField(f) if f in ("input", "output") else bool(getattr(message, f)))
        }
        row = await self.service.update_learnware(
            current_principal(),
            learnware_id,
            Semantic.from_proto(message),
            set_fields,
            list(request.update_mask.paths),
            request.learnware.etag,
        )
        return converters.learnware_to_proto(row)

    async def DeleteLearnware(
        self, request: pb.DeleteLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.service.delete_learnware(
            current_principal(), parse_learnware_name(request.name), request.etag
        )
        return empty_pb2.Empty()

    async def DownloadLearnware(
        self, request: pb.DownloadLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadLearnwareResponse]:
        row, chunks = await self.service.download(
            parse_learnware_name(request.name), request.read_offset, request.read_limit
        )
        sha = ((SHA256_TRAILER, row.package.sha256),)
        # Also in the initial metadata: the server's interceptor chain may replace trailers.
        await context.send_initial_metadata(sha)
        offset = request.read_offset
        async for chunk in chunks:
            yield pb.DownloadLearnwareResponse(chunk=chunk, offset=offset)
            offset += len(chunk)
        context.set_trailing_metadata(sha)

    async def GetSpecification(
        self, request: pb.GetSpecificationRequest, context: grpc.aio.ServicerContext
    ) -> learnware_pb2.Specification:
        learnware_id, name = parse_specification_name(request.name)
        spec = await self.service.get_specification(learnware_id, name)
        return converters.specification_to_proto(spec)

    async def GetCheckReport(
        self, request: pb.GetCheckReportRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.CheckReport:
        learnware_id = parse_report_name(request.name)
        job = await self.service.get_check_report(learnware_id)
        return converters.check_report_to_proto(learnware_id, job)

    async def WatchChanges(
        self, request: pb.WatchChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchChangesResponse]:
        events = self.service.watch(request.since_sequence)
        try:
            async for event in events:
                if event is None:  # the end of the replay
                    yield pb.WatchChangesResponse(caught_up=True)
                else:
                    yield pb.WatchChangesResponse(event=converters.change_event_to_proto(event))
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def GetSemanticVocabulary(
        self,
        request: pb.GetSemanticVocabularyRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.GetSemanticVocabularyResponse:
        return pb.GetSemanticVocabularyResponse(
            keys=[
                resources_pb2.SemanticKey(key=k.key, type=k.type, values=k.values)
                for k in VOCABULARY
            ]
        )

    # -- tokens --------------------------------------------------------------------------------

    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        role = converters.ROLE_FROM_PROTO.get(request.role)
        if role is None:
            raise InvalidArgument.for_field("role", "required: READER, DEVELOPER or ADMIN")
        token, secret = await self.service.create_token(
            current_principal(), request.principal, role, request.display_name
        )
        return pb.CreateTokenResponse(token=converters.token_to_proto(token), secret=secret)

    async def ListTokens(
        self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokensResponse:
        page = await self.service.list_tokens(
            current_principal(), request.page_size, request.page_token
        )
        return pb.ListTokensResponse(
            tokens=[converters.token_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    async def DeleteToken(
        self, request: pb.DeleteTokenRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.service.delete_token(current_principal(), parse_token_name(request.name))
        return empty_pb2.Empty()
