"""The user commands of the `lwdock` CLI: spec fit, pack, submit, status, search, download,
reuse (and `demo`, in lwdock.demo).

Contract for scripts (docs/cli.md): with `--json` the last line of stdout is one JSON object
(on failure `{"error": {...}}`); progress bars and messages go to stderr; a server error
prints its status code and field violations on stderr; the exit code says what happened
(`EXIT_*` below).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from lwdock.client.config import Endpoints
from lwdock.client.errors import CheckTimeout, RpcStatus, rpc_status
from lwdock.errors import DeadlineExceeded, FieldViolation, InvalidArgument, LwdockError

EXIT_OK = 0
EXIT_FAILURE = 1  # INTERNAL, UNKNOWN, DATA_LOSS or an unexpected local error
EXIT_USAGE = 2  # bad command line (argparse)
EXIT_INVALID = 3  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE; bad local input
EXIT_NOT_FOUND = 4  # NOT_FOUND
EXIT_AUTH = 5  # UNAUTHENTICATED, PERMISSION_DENIED
EXIT_UNAVAILABLE = 6  # UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED, CANCELLED
EXIT_CONFLICT = 7  # ALREADY_EXISTS, ABORTED, RESOURCE_EXHAUSTED
EXIT_REJECTED = 8  # submit --wait: the check rejected the learnware
EXIT_PENDING = 9  # submit --wait: still not checked when --wait-timeout passed
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_BY_CODE: dict[str, int] = {
    "INVALID_ARGUMENT": EXIT_INVALID,
    "FAILED_PRECONDITION": EXIT_INVALID,
    "OUT_OF_RANGE": EXIT_INVALID,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAUTHENTICATED": EXIT_AUTH,
    "PERMISSION_DENIED": EXIT_AUTH,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
    "UNIMPLEMENTED": EXIT_UNAVAILABLE,
    "CANCELLED": EXIT_UNAVAILABLE,
    "ALREADY_EXISTS": EXIT_CONFLICT,
    "ABORTED": EXIT_CONFLICT,
    "RESOURCE_EXHAUSTED": EXIT_CONFLICT,
}

Handler = Callable[[argparse.Namespace], int]


# -- output ------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, value: dict[str, Any], human: str | None = None) -> None:
    """`--json`: the object as the last stdout line; else the human text (or the JSON)."""
    if getattr(args, "json", False):
        print(json.dumps(value), flush=True)
    else:
        print(human if human is not None else json.dumps(value, indent=1), flush=True)


def _status_of(error: LwdockError) -> RpcStatus:
    """The server's status, or one made up for a local error (same fields)."""
    remote = rpc_status(error)
    if remote is not None:
        return remote
    from lwdock.server.status import code_for

    violations = tuple(
        v for v in getattr(error, "violations", []) or [] if isinstance(v, FieldViolation)
    )
    return RpcStatus(
        code=code_for(error).name,
        message=error.message,
        reason=error.reason,
        field_violations=violations,
    )


def exit_code_for(error: LwdockError) -> int:
    if isinstance(error, CheckTimeout):
        return EXIT_PENDING
    return EXIT_BY_CODE.get(_status_of(error).code, EXIT_FAILURE)


def report_error(
    args: argparse.Namespace, error: LwdockError, *, exit_code: int | None = None
) -> int:
    """Status code, message and field violations on stderr (and as JSON with --json); the
    exit code for the error's status unless `exit_code` is given."""
    status = _status_of(error)
    where = f" from {status.service}" if status.service else ""
    request = f" (request id {status.request_id})" if status.request_id else ""
    _say(f"lwdock {args.command}: error{where}{request}: {status.describe()}")
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "error": {
                        "code": status.code,
                        "message": status.message,
                        "service": status.service,
                        "reason": status.reason,
                        "request_id": status.request_id,
                        "field_violations": [
                            {"field": v.field, "description": v.description}
                            for v in status.field_violations
                        ],
                    }
                }
            ),
            flush=True,
        )
    return exit_code_for(error) if exit_code is None else exit_code


def local_error(error: Exception) -> LwdockError:
    """A local exception as the typed error the CLI reports: a file that cannot be read or
    written, or a bad value (OSError, ValueError), is invalid input (exit 3); a timeout is
    DEADLINE_EXCEEDED (exit 6); anything else is an unexpected failure (INTERNAL, exit 1)."""
    if isinstance(error, LwdockError):
        return error
    if isinstance(error, TimeoutError):  # an OSError, but not a file problem
        return DeadlineExceeded(str(error) or "timed out", reason="LOCAL_TIMEOUT")
    if isinstance(error, OSError):
        where = error.filename if error.filename is not None else ""
        what = error.strerror or str(error)
        if where:
            return InvalidArgument(
                f"{where}: {what}", [FieldViolation(str(where), what)], reason="LOCAL_FILE"
            )
        return InvalidArgument(what, reason="LOCAL_FILE")
    if isinstance(error, ValueError):
        return InvalidArgument(str(error) or type(error).__name__, reason="LOCAL_INPUT")
    return LwdockError(f"{type(error).__name__}: {error}", reason="UNEXPECTED_ERROR")


def handles_errors(handler: Handler) -> Handler:
    """Every failure -> stderr + exit code (+ the JSON error object with --json), never a
    traceback: typed errors and decoded gRPC errors by their code, local file and value
    problems as invalid input (3), anything unexpected as INTERNAL (1); Ctrl-C -> 130."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from lwdock.client.errors import from_rpc_error

        try:
            return handler(args)
        except LwdockError as error:
            return report_error(args, error)
        except grpc.RpcError as error:
            return report_error(args, from_rpc_error(error))
        except KeyboardInterrupt:
            _say(f"lwdock {args.command}: interrupted")
            return EXIT_INTERRUPTED
        except Exception as error:
            return report_error(args, local_error(error))

    return run


# -- the client ----------------------------------------------------------------------------------


def client_from_args(args: argparse.Namespace) -> Any:
    from lwdock.client.sync import LearnwareClient

    endpoints = Endpoints.from_settings(
        spec=args.spec_address,
        registry=args.registry_address,
        search=args.search_address,
        reuse=args.reuse_address,
    )
    return LearnwareClient(
        endpoints,
        args.token,
        progress=not args.no_progress and sys.stderr.isatty(),
        **timeouts(args),
    )


def timeouts(args: argparse.Namespace) -> dict[str, float]:
    """The client's deadlines: `--timeout S` bounds every call of the command (quick calls,
    uploads, downloads, predictions); without it, 30 s per quick call and 600 s per
    transfer, prediction or reuser fit (the SDK's defaults)."""
    if args.timeout is None:
        return {}
    return {"timeout_s": args.timeout, "transfer_timeout_s": args.timeout}


def client_options() -> argparse.ArgumentParser:
    """Flags every command that talks to the services accepts."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--token", help="bearer token (LWDOCK_TOKEN; else $LWDOCK_HOME/admin.token)")
    for name in ("spec", "registry", "search", "reuse"):
        group.add_argument(
            f"--{name}-address",
            help=f"host:port of {name}_service (LWDOCK_{name.upper()}_ADDRESS, the suite's)",
        )
    group.add_argument(
        "--timeout",
        type=float,
        help="deadline in seconds of every call, transfers and predictions included "
        "(default: 30 per quick call, 600 per upload, download, prediction or reuser fit)",
    )
    return parent


def output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", help="print one JSON object on the last line"
    )
    parent.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parent


# -- spec fit ------------------------------------------------------------------------------------


def _read_texts(path: Path, column: str | None) -> list[str]:
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
        import pandas as pd

        if column is None:
            raise InvalidArgument.for_field("--text-column", "required for a table of texts")
        frame = (
            pd.read_parquet(path)
            if path.suffix.lower() in (".parquet", ".pq")
            else pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        )
        if column not in frame.columns:
            raise InvalidArgument.for_field("--text-column", f"no column {column!r} in {path}")
        return [str(t) for t in frame[column].tolist()]
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise InvalidArgument.for_field(str(path), f"cannot read: {exc.strerror}") from None


@handles_errors
def spec_fit(args: argparse.Namespace) -> int:
    from lwdock.client import specs

    show = not args.no_progress and sys.stderr.isatty()
    progress = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=100, desc="fit", unit="%", leave=False)

        def progress(stage: str, fraction: float) -> None:
            bar.set_postfix_str(stage)
            bar.update(max(0, int(fraction * 100) - bar.n))

    data = Path(args.data)
    if args.type == "text":
        spec = specs.fit_texts(
            _read_texts(data, args.text_column),
            gamma=args.gamma,
            reduced_set_size=args.k,
            steps=args.steps,
            seed=args.seed,
            progress=progress,
        )
    elif args.type == "image":
        spec = specs.fit_images(
            specs.read_table(data),
            layout=args.layout,
            reduced_set_size=args.k,
            steps=args.steps,
            seed=args.seed,
            progress=progress,
        )
    else:
        spec = specs.fit_table(
            data,
            gamma=args.gamma,
            reduced_set_size=args.k,
            steps=args.steps,
            seed=args.seed,
            progress=progress,
        )
    if show:
        bar.close()
    specs.save_spec(spec, args.output)
    result = {
        "output": str(args.output),
        "type": spec.type.value,
        "num_points": spec.num_points,
        "k": int(spec.z.shape[0]),
        "sample_shape": list(spec.sample_shape),
        "gamma": spec.gamma,
        "fit_mmd2": spec.fit_mmd2,
    }
    emit(
        args,
        result,
        f"wrote {args.output}: {spec.type.value}, {spec.num_points} rows -> "
        f"{spec.z.shape[0]} points of shape {list(spec.sample_shape)} "
        f"(gamma {spec.gamma}, MMD² to the data {spec.fit_mmd2:.3g})",
    )
    return EXIT_OK


# -- pack ----------------------------------------------------------------------------------------


def _semantic_from(path: str) -> Any:
    from lwdock.client.specs import load_json
    from lwdock.semantic.checker import Semantic

    return Semantic.from_reference_dict(load_json(path), check=False)


@handles_errors
def pack(args: argparse.Namespace) -> int:
    import hashlib
    import io
    import zipfile

    from lwdock.client.specs import load_spec
    from lwdock.package import pack as packing

    source = Path(args.source)
    spec = load_spec(args.spec) if args.spec else None
    semantic = _semantic_from(args.semantic) if args.semantic else None
    if source.is_dir():
        data = packing.pack_folder(source, spec=spec)
    elif source.is_file():
        if spec is None:
            raise InvalidArgument.for_field("--spec", "required when packing a pickled model")
        input_shape = args.input_shape
        output_shape = args.output_shape
        if input_shape is None and semantic is not None and semantic.input is not None:
            input_shape = [semantic.input.dimension]
        if output_shape is None and semantic is not None and semantic.output is not None:
            output_shape = [semantic.output.dimension]
        data = packing.pack_model(
            packing.PickledModel(source.read_bytes()),
            spec,
            input_shape=input_shape,
            output_shape=output_shape,
            predict_method=args.predict_method,
            requirements=args.requirement or [],
        )
    else:
        raise InvalidArgument.for_field(str(source), "no such file or folder")
    if semantic is not None:  # the registry's validation, before anything is written
        packing.check_package(data, semantic)
    packing.write_package(data, args.output)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    result = {
        "output": str(args.output),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "files": names,
        "checked": semantic is not None,
    }
    emit(args, result, f"wrote {args.output} ({len(data):,} bytes): {', '.join(names)}")
    return EXIT_OK


# -- submit, status, download -----------------------------------------------------------------


@handles_errors
def submit(args: argparse.Namespace) -> int:
    from lwdock.client.specs import load_json

    semantic = load_json(args.semantic)  # sent as written: the registry checks it
    with client_from_args(args) as client:
        created = client.upload(args.package, semantic, request_id=args.request_id)
        _say(f"uploaded learnware {created.id} ({created.state.value})")
        learnware, report = created, None
        code = EXIT_OK
        if args.wait:
            try:
                learnware = client.wait_checked(created.id, timeout_s=args.wait_timeout)
                report = client.check_report(created.id)
            except CheckTimeout:
                learnware = client.get_learnware(created.id)
                code = EXIT_PENDING
        reason = learnware.state_reason or (report.reason if report is not None else "")
        if learnware.state.value == "REJECTED":
            code = EXIT_REJECTED
    result = {
        "id": learnware.id,
        "state": learnware.state.value,
        "reason": reason,
        "name": learnware.semantic.name,
    }
    human = f"{learnware.id} {learnware.state.value}" + (f": {reason}" if reason else "")
    if code == EXIT_PENDING:
        human += f" (not checked within {args.wait_timeout:g} s)"
    emit(args, result, human)
    return code


@handles_errors
def status(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        learnware = client.get_learnware(args.learnware)
        report = client.check_report(learnware.id)
    result = learnware.to_dict()
    result["check"] = (
        None
        if report is None
        else {"passed": report.passed, "reason": report.reason, "log": report.log}
    )
    lines = [
        f"{learnware.id} {learnware.state.value}"
        + (f": {learnware.state_reason}" if learnware.state_reason else ""),
        f"  name    {learnware.semantic.name}",
        f"  owner   {learnware.owner}",
        f"  package {learnware.sha256} ({learnware.size_bytes:,} bytes)",
    ]
    if report is not None:
        verdict = "passed" if report.passed else f"failed: {report.reason}"
        lines.append(f"  check   {verdict}")
        if args.log and report.log:
            lines.append(report.log)
    emit(args, result, "\n".join(lines))
    return EXIT_OK


@handles_errors
def download(args: argparse.Namespace) -> int:
    import hashlib

    from lwdock.client.types import learnware_id

    output = Path(args.output or f"{learnware_id(args.learnware)}.zip")
    with client_from_args(args) as client:
        data = client.download(args.learnware, output)
    result = {
        "id": learnware_id(args.learnware),
        "path": str(output),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    emit(args, result, f"wrote {output} ({len(data):,} bytes, sha256 checked)")
    return EXIT_OK


# -- search --------------------------------------------------------------------------------------


@handles_errors
def search(args: argparse.Namespace) -> int:
    from lwdock.client.aio import semantic_query
    from lwdock.client.specs import load_json, load_spec

    query = semantic_query(load_json(args.semantic) if args.semantic else None)
    if args.text:
        query.text = args.text
    spec = load_spec(args.spec) if args.spec else None
    with client_from_args(args) as client:
        found = client.search(query, spec, max_mixture=args.max_mixture, page_size=args.page_size)
    result = found.to_dict()
    lines = [f"{len(found.single)} learnware(s) of {found.candidate_count} candidate(s)"]
    if found.empty_reason:
        lines.append(f"  ({found.empty_reason})")
    for match in found.single:
        lines.append(f"  {match.id}  score {match.score:.3f}  mmd² {match.mmd2:.4g}")
    if found.mixture is not None:
        mixture = found.mixture
        pairs = zip(mixture.ids, mixture.weights, strict=False)
        parts = ", ".join(f"{i} x {w:.2f}" for i, w in pairs)
        lines.append(f"mixture: {parts}  score {mixture.score:.3f}  mmd² {mixture.mmd2:.4g}")
    emit(args, result, "\n".join(lines))
    return EXIT_OK


# -- reuse ---------------------------------------------------------------------------------------


def _read_array(path: str, flag: str) -> np.ndarray:
    from lwdock.client.specs import read_table

    try:
        return read_table(path)
    except InvalidArgument as exc:
        raise InvalidArgument.for_field(flag, exc.message) from None


@handles_errors
def reuse(args: argparse.Namespace) -> int:
    if not args.learnware and not args.reuser:
        raise InvalidArgument.for_field("--learnware", "give at least one (or --reuser)")
    if args.weight and len(args.weight) != len(args.learnware):
        raise InvalidArgument.for_field(
            "--weight", f"{len(args.weight)} weights for {len(args.learnware)} learnwares"
        )
    if (args.fit_x is None) != (args.fit_y is None):
        raise InvalidArgument.for_field("--fit-x", "--fit-x and --fit-y go together")
    X = _read_array(args.input, "--input")
    with client_from_args(args) as client:
        reuser_name = args.reuser
        if args.fit_x is not None:
            reuser = client.create_reuser(
                args.learnware,
                _read_array(args.fit_x, "--fit-x"),
                _read_array(args.fit_y, "--fit-y").reshape(-1),
                strategy=args.strategy or "feature_augment",
                mode=args.mode,
                weights=args.weight,
                **({} if args.timeout is None else {"timeout_s": args.timeout}),
            )
            reuser_name = reuser.name
            _say(f"fitted {reuser.name} ({reuser.strategy})")
        if reuser_name:
            prediction = client.predict_with_reuser(reuser_name, X)
        else:
            prediction = client.predict(
                args.learnware,
                X,
                strategy=args.strategy,
                weights=args.weight,
                user_spec=args.spec,
            )
    np.save(args.output, prediction.output, allow_pickle=False)
    failed = [m for m in prediction.members if not m.ok]
    for member in failed:
        _say(f"warning: {member.learnware} failed ({member.code}): {member.message}")
    strategy = prediction.strategy.value if prediction.strategy is not None else ""
    result = {
        "rows": prediction.rows,
        "strategy": strategy,
        "output": str(args.output),
        "shape": list(prediction.output.shape),
        "failed_members": [m.learnware for m in failed],
    }
    if reuser_name:
        result["reuser"] = reuser_name
    emit(
        args,
        result,
        f"wrote {args.output}: {prediction.rows} rows, shape {list(prediction.output.shape)}"
        f" ({strategy or 'reuser'})",
    )
    return EXIT_OK


# -- the parsers -----------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Register the client commands on the `lwdock` subparsers."""
    conn, out = client_options(), output_options()

    spec = commands.add_parser("spec", help="statistical specifications (local, no server)")
    spec_commands = spec.add_subparsers(dest="spec_command", required=True)
    fit = spec_commands.add_parser(
        "fit",
        parents=[out],
        help="fit an RKME specification of DATA locally",
        description="Fits the reduced-set kernel mean embedding of a table (.csv with a header "
        "row, .tsv, .npy, .parquet), texts (--type text: a .txt with one text per line, or a "
        "table column) or images (--type image: .npy NxCxHxW) and writes the reference's JSON.",
    )
    fit.add_argument("data", help="the data file")
    fit.add_argument("-o", "--output", required=True, type=Path, help="SPEC.json to write")
    fit.add_argument("--type", choices=("table", "text", "image"), default="table")
    fit.add_argument("--gamma", type=float, default=0.1, help="Gaussian kernel gamma (0.1)")
    fit.add_argument("--k", type=int, default=100, help="reduced set size (100)")
    fit.add_argument("--steps", type=int, default=3, help="optimisation rounds (3)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--text-column", help="--type text: the column holding the texts")
    fit.add_argument("--layout", default="NCHW", help="--type image: NCHW or NHWC")
    fit.set_defaults(handler=spec_fit, command="spec fit")

    p = commands.add_parser(
        "pack",
        parents=[out],
        help="build a learnware zip from a folder or a pickled model",
        description="SOURCE is a learnware folder (with learnware.yaml) or a pickled model "
        "(model.pkl), packed with the reference's PickleLoadedModel template. With "
        "--semantic the package is validated locally exactly as the registry will.",
    )
    p.add_argument("source", help="learnware folder or pickled model file")
    p.add_argument("-o", "--output", required=True, type=Path, help="PACKAGE.zip to write")
    p.add_argument("--spec", help="SPEC.json (from `lwdock spec fit`); required for a model")
    p.add_argument("--semantic", help="SEMANTIC.json: validate the package against it")
    p.add_argument("--input-shape", type=int, nargs="+", help="one sample's input shape")
    p.add_argument("--output-shape", type=int, nargs="+", help="one sample's output shape")
    p.add_argument("--predict-method", default="predict", help="e.g. predict_proba")
    p.add_argument("--requirement", action="append", help="a requirements.txt line (repeat)")
    p.set_defaults(handler=pack)

    s = commands.add_parser(
        "submit", parents=[conn, out], help="upload a learnware zip to the registry"
    )
    s.add_argument("package", help="PACKAGE.zip")
    s.add_argument("--semantic", required=True, help="SEMANTIC.json (the reference's format)")
    s.add_argument("--wait", action="store_true", help="wait for the check: ACTIVE or REJECTED")
    s.add_argument("--wait-timeout", type=float, default=300.0, help="seconds to wait (300)")
    s.add_argument("--request-id", help="idempotency key (default: a new one)")
    s.set_defaults(handler=submit)

    st = commands.add_parser(
        "status", parents=[conn, out], help="a learnware's state and check report"
    )
    st.add_argument("learnware", help="ID or learnwares/ID")
    st.add_argument("--log", action="store_true", help="print the check log")
    st.set_defaults(handler=status)

    se = commands.add_parser(
        "search", parents=[conn, out], help="find learnwares for a task (semantic + statistical)"
    )
    se.add_argument("--semantic", help="SEMANTIC.json with the user's requirements")
    se.add_argument("--spec", help="SPEC.json: the RKME of the user's data")
    se.add_argument("--text", help="free text matched against names and descriptions")
    se.add_argument("--max-mixture", type=int, default=5, help="learnwares in a mixture (5)")
    se.add_argument("--page-size", type=int, default=0, help="single results (server default)")
    se.set_defaults(handler=search)

    d = commands.add_parser("download", parents=[conn, out], help="download a learnware's zip")
    d.add_argument("learnware", help="ID or learnwares/ID")
    d.add_argument("-o", "--output", help="file to write (ID.zip)")
    d.set_defaults(handler=download)

    r = commands.add_parser(
        "reuse",
        parents=[conn, out],
        help="predict with one or several learnwares (or a labelled reuser)",
        description="Runs the learnwares on --input in reuse_service's sandbox and writes the "
        "output as .npy. With --fit-x/--fit-y a labelled reuser (feature_augment or "
        "ensemble_pruning) is fitted first and then used.",
    )
    r.add_argument("--learnware", action="append", default=[], help="ID (repeat for several)")
    r.add_argument("--weight", type=float, action="append", help="weight per --learnware")
    r.add_argument(
        "--strategy",
        help="single, average_mean, vote_by_label, vote_by_probability, job_selector, "
        "ensemble_pruning, feature_augment",
    )
    r.add_argument("--spec", help="the user's SPEC.json (for job_selector)")
    r.add_argument("--reuser", help="reusers/ID from an earlier --fit-x run")
    r.add_argument("--input", required=True, help="X (.npy, .csv, .parquet)")
    r.add_argument("--output", required=True, type=Path, help="Y.npy to write")
    r.add_argument("--fit-x", help="labelled features for a reuser")
    r.add_argument("--fit-y", help="labels for a reuser")
    r.add_argument("--mode", default="classification", choices=("classification", "regression"))
    r.set_defaults(handler=reuse)


__all__ = [
    "EXIT_AUTH",
    "EXIT_CONFLICT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_REJECTED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "add_commands",
    "client_from_args",
    "client_options",
    "emit",
    "handles_errors",
    "local_error",
    "output_options",
    "report_error",
    "timeouts",
]
