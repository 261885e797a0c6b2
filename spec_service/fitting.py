"""Runs RKME fits in worker processes, with progress, so cancelling really stops them.

Each fit runs in a fresh `spawn`ed process (gRPC does not survive fork; numpy work there
never blocks the server's event loop). The child sends ("progress", stage, fraction) while it
works, then ("done", spec JSON) or ("error", kind, message, violations). Cancelling the
awaiting task terminates the child.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from lwdock import errors
from lwdock.rkme.spec import RKMESpec

ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class TableFitOptions:
    gamma: float = 0.1
    reduced_set_size: int = 100
    steps: int = 3
    seed: int = 0
    nonnegative_beta: bool = True


def _table_fit_worker(conn: Connection, data: np.ndarray, options: TableFitOptions) -> None:
    """Child process entry point (must be importable: spawn pickles it by name)."""
    try:
        from lwdock.rkme.fit import fit_table_rkme

        spec = fit_table_rkme(
            data,
            gamma=options.gamma,
            reduced_set_size=options.reduced_set_size,
            steps=options.steps,
            seed=options.seed,
            nonnegative_beta=options.nonnegative_beta,
            progress=lambda stage, fraction: conn.send(("progress", stage, fraction)),
        )
        conn.send(("done", spec.to_reference_json()))
    except errors.InvalidArgument as error:
        conn.send(("invalid", error.message, [(v.field, v.description) for v in error.violations]))
    except Exception as error:  # reported to the parent, which maps it to INTERNAL
        conn.send(("error", type(error).__name__, str(error)))
    finally:
        conn.close()


async def run_table_fit(
    data: np.ndarray, options: TableFitOptions, progress: ProgressCallback
) -> RKMESpec:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_table_fit_worker, args=(sender, data, options), name="lwdock-fit", daemon=True
    )
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
            kind = message[0]
            if kind == "progress":
                progress(message[1], float(message[2]))
            elif kind == "done":
                return RKMESpec.from_reference_json(message[1])
            elif kind == "invalid":
                raise errors.InvalidArgument(
                    message[1], [errors.FieldViolation(f, d) for f, d in message[2]]
                )
            else:
                raise RuntimeError(f"fit failed in worker: {message[1]}: {message[2]}")
    finally:
        if process.is_alive():
            process.terminate()
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()
