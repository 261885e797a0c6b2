"""Reading a fit request stream: config first, then a tensor header, then raw chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from lwdock.errors import InvalidArgument, ResourceExhausted
from lwdock.streams import TensorAssembler


async def read_tensor_stream(
    requests: AsyncIterator[Any],
    *,
    config_field: str,
    max_bytes: int,
    max_rows: int,
    ndim: tuple[int, ...],
) -> tuple[Any, np.ndarray]:
    """(config message, array) from a `oneof message {config, header, chunk}` stream."""
    config: Any = None
    assembler: TensorAssembler | None = None
    async for request in requests:
        kind = request.WhichOneof("message")
        if kind == config_field:
            if config is not None or assembler is not None:
                raise InvalidArgument.for_field(config_field, "must be the first message, once")
            config = getattr(request, config_field)
        elif kind == "header":
            if assembler is not None:
                raise InvalidArgument.for_field("header", "sent twice")
            assembler = TensorAssembler(
                request.header, "header", max_bytes=max_bytes, max_rows=max_rows, ndim=ndim
            )
        elif kind == "chunk":
            if assembler is None:
                raise InvalidArgument.for_field("chunk", "data before the header")
            assembler.add(request.chunk)
        else:
            raise InvalidArgument.for_field("message", "empty message in the stream")
    if assembler is None:
        raise InvalidArgument.for_field("header", "the stream has no tensor header")
    return config, assembler.finish()


async def read_text_stream(
    requests: AsyncIterator[Any], *, max_texts: int, max_characters: int
) -> tuple[Any, list[str]]:
    """(config message or None, texts) from a `oneof message {config, texts}` stream."""
    config: Any = None
    texts: list[str] = []
    characters = 0
    async for request in requests:
        kind = request.WhichOneof("message")
        if kind == "config":
            if config is not None or texts:
                raise InvalidArgument.for_field("config", "must be the first message, once")
            config = request.config
        elif kind == "texts":
            batch = list(request.texts.texts)
            characters += sum(len(text) for text in batch)
            texts.extend(batch)
            if len(texts) > max_texts or characters > max_characters:
                raise ResourceExhausted(
                    f"more than {max_texts} texts or {max_characters} characters",
                    subject="texts",
                    limit=f"{max_texts} texts, {max_characters} characters",
                )
        else:
            raise InvalidArgument.for_field("message", "empty message in the stream")
    if not texts:
        raise InvalidArgument.for_field("texts", "the stream has no texts")
    return config, texts
