"""Runs RKME fits in worker processes, with progress, so cancelling really stops them.

Each fit runs in a fresh `spawn`ed process (gRPC does not survive fork; the numeric work
there never blocks the server's event loop). The child sends ("progress", stage, fraction)
while it works, then ("done", spec) or ("invalid", message, violations) or ("error", ...).
Cancelling the awaiting task terminates the child. The child is our own code working on
data already validated here; its replies are our own dataclasses.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from lwdock import errors
from lwdock.rkme.spec import RKMESpec

ProgressCallback = Callable[[str, float], None]
FitKind = Literal["table", "text", "image"]


@dataclass(frozen=True)
class TableFitOptions:
    gamma: float = 0.1
    reduced_set_size: int = 100
    steps: int = 3
    seed: int = 0
    nonnegative_beta: bool = True


def _fit_function(kind: FitKind) -> Callable[..., RKMESpec]:
    """Imported in the child only: the text model and torch load where they are used."""
    if kind == "table":
        from lwdock.rkme.fit import fit_table_rkme

        return fit_table_rkme
    if kind == "text":
        from lwdock.rkme.text import fit_text_rkme

        return fit_text_rkme
    from lwdock.rkme.image import fit_image_rkme

    return fit_image_rkme


def _fit_worker(conn: Connection, kind: FitKind, data: Any, options: dict[str, Any]) -> None:
    """Child process entry point (must be importable: spawn pickles it by name)."""
    try:
        fit = _fit_function(kind)
        spec = fit(
            data,
            **options,
            progress=lambda stage, fraction: conn.send(("progress", stage, fraction)),
        )
        if kind == "image":  # an ImageRKME: keep its kernel on the spec
            spec.spec.image_kernel, spec.spec.msg = spec.kernel, spec.msg
            spec = spec.spec
        conn.send(("done", spec))
    except errors.InvalidArgument as error:
        conn.send(("invalid", error.message, [(v.field, v.description) for v in error.violations]))
    except errors.LwdockError as error:
        conn.send(("domain", type(error).__name__, error.message, error.reason))
    except Exception as error:  # reported to the parent, which maps it to INTERNAL
        conn.send(("error", type(error).__name__, str(error)))
    finally:
        conn.close()


def _domain_error(class_name: str, message: str, reason: str) -> errors.LwdockError:
    """Rebuild a domain error the worker reported (by name: exceptions with keyword
    constructors do not survive pickling)."""
    cls = getattr(errors, class_name, errors.LwdockError)
    try:
        error = cls(message) if issubclass(cls, errors.LwdockError) else errors.LwdockError(message)
    except TypeError:
        error = errors.LwdockError(message)
    error.reason = reason
    return error


async def run_fit(
    kind: FitKind, data: Any, kwargs: dict[str, Any], progress: ProgressCallback
) -> RKMESpec:
    """Fit in a worker process: `kind`'s fit function called with `data` and `kwargs`."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_fit_worker, args=(sender, kind, data, kwargs), name=f"lwdock-fit-{kind}",
        daemon=True,
    )  # fmt: skip
    process.start()
    sender.close()
    try:
        while True:
            try:
                message: tuple[Any, ...] = await asyncio.to_thread(receiver.recv)
            except EOFError:
                await asyncio.to_thread(process.join)
                raise errors.Unavailable(
                    f"the fitting worker exited unexpectedly (exit code {process.exitcode})"
                ) from None
            kind_of_reply = message[0]
            if kind_of_reply == "progress":
                progress(message[1], float(message[2]))
            elif kind_of_reply == "done":
                return message[1]
            elif kind_of_reply == "invalid":
                raise errors.InvalidArgument(
                    message[1], [errors.FieldViolation(f, d) for f, d in message[2]]
                )
            elif kind_of_reply == "domain":
                raise _domain_error(*message[1:])
            else:
                raise RuntimeError(f"fit failed in worker: {message[1]}: {message[2]}")
    finally:
        if process.is_alive():
            process.terminate()
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()
