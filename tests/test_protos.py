"""The contracts under protos/ compile with old and new protoc, lint clean, match the stubs.

No servers here: these are plain synchronous tests around protoc, buf and gen_protos.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

from tests.conftest import ROOT, venv_bin

PROTOS = ROOT / "protos"
SYSTEM_PROTOC = Path("/usr/bin/protoc")
SYSTEM_INCLUDE = Path("/usr/include")
GRPC_TOOLS_INCLUDE = Path(grpc_tools.__file__).parent / "_proto"

ALL_PROTOS = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
OUR_PROTOS = [p for p in ALL_PROTOS if p.startswith("lwdock/")]
# Ours except KServe's protocol file, whose package and options are fixed upstream.
OPTIONED_PROTOS = [p for p in OUR_PROTOS if not p.startswith("lwdock/inference/")]
REQUIRED_FILE_OPTIONS = ("go_package", "java_package", "java_multiple_files", "csharp_namespace")

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI = "unary", "client", "server", "bidi"
OPERATION = ".google.longrunning.Operation"
EMPTY = ".google.protobuf.Empty"
LEARNWARE = ".lwdock.common.v1.Learnware"

# service -> method -> (streaming kind, output type or None for "<Method>Response" in the
# service's package). Every method of each service, so a new or removed RPC shows up here.
EXPECTED_SERVICES: dict[str, dict[str, tuple[str, str | None]]] = {
    "lwdock.spec.v1.SpecService": {
        "FitTableSpecification": (CLIENT_STREAM, OPERATION),
        "FitImageSpecification": (CLIENT_STREAM, OPERATION),
        "FitTextSpecification": (CLIENT_STREAM, OPERATION),
        "ComputeSpecificationDistance": (UNARY, None),
        "SampleSpecification": (UNARY, None),
        "EmbedSpecification": (UNARY, None),
    },
    "lwdock.registry.v1.RegistryService": {
        "CreateLearnware": (CLIENT_STREAM, LEARNWARE),
        "GetUploadStatus": (UNARY, ".lwdock.registry.v1.UploadStatus"),
        "GetLearnware": (UNARY, LEARNWARE),
        "ListLearnwares": (UNARY, None),
        "UpdateLearnware": (UNARY, LEARNWARE),
        "ReplaceLearnwarePackage": (CLIENT_STREAM, LEARNWARE),
        "DeleteLearnware": (UNARY, EMPTY),
        "DownloadLearnware": (SERVER_STREAM, None),
        "GetSpecification": (UNARY, ".lwdock.common.v1.Specification"),
        "GetCheckReport": (UNARY, ".lwdock.registry.v1.CheckReport"),
        "WatchChanges": (SERVER_STREAM, None),
        "GetSemanticVocabulary": (UNARY, None),
        "CreateToken": (UNARY, None),
        "ListTokens": (UNARY, None),
        "DeleteToken": (UNARY, EMPTY),
    },
    "lwdock.search.v1.SearchService": {
        "SearchLearnwares": (UNARY, None),
        "GetIndexStats": (UNARY, None),
    },
    "lwdock.reuse.v1.ReuseService": {
        "Predict": (UNARY, None),
        "StreamPredict": (BIDI, None),
        "CreateReuser": (CLIENT_STREAM, OPERATION),
        "GetReuser": (UNARY, ".lwdock.reuse.v1.Reuser"),
        "DeleteReuser": (UNARY, EMPTY),
        "CheckLearnware": (UNARY, None),
        "GetRuntimeInfo": (UNARY, None),
    },
    "inference.GRPCInferenceService": {
        name: (UNARY, None)
        for name in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        )
    },
}


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def load_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString(path.read_bytes())
    return descriptors


@pytest.fixture(scope="module")
def system_protoc() -> str:
    if not SYSTEM_PROTOC.exists():
        pytest.fail(
            f"{SYSTEM_PROTOC} is missing: run `make system-deps` (scripts/system-deps.sh "
            "installs Debian's protobuf-compiler)"
        )
    return str(SYSTEM_PROTOC)


def system_well_known_include() -> Path:
    """Where the old protoc finds google/protobuf/*.proto.

    Debian ships the well-known types in libprotobuf-dev (/usr/include), not in
    protobuf-compiler; without it, fall back to the copy bundled with grpcio-tools.
    """
    if (SYSTEM_INCLUDE / "google" / "protobuf" / "descriptor.proto").exists():
        return SYSTEM_INCLUDE
    return GRPC_TOOLS_INCLUDE


def test_system_protoc_is_the_old_3x_compiler(system_protoc: str) -> None:
    result = run([system_protoc, "--version"])
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"libprotoc (\d+)\.(\d+)\.\d+\s*", result.stdout)
    assert match, result.stdout
    assert match.group(1) == "3", f"expected Debian's protoc 3.x, got {result.stdout.strip()}"


def test_every_proto_compiles_with_system_protoc(system_protoc: str, tmp_path: Path) -> None:
    out = tmp_path / "system.pb"
    include = system_well_known_include()
    result = run(
        [
            system_protoc,
            f"-I{PROTOS}",
            f"-I{include}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *ALL_PROTOS,
        ]
    )
    assert result.returncode == 0, f"protoc 3.x (well-known types from {include}):\n" + (
        result.stderr
    )
    compiled = {f.name for f in load_descriptor_set(out).file}
    assert set(ALL_PROTOS) <= compiled


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    """Every .proto under protos/ compiled by the pinned grpcio-tools."""
    out = tmp_path_factory.mktemp("grpc_tools") / "all.pb"
    result = run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{GRPC_TOOLS_INCLUDE}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *ALL_PROTOS,
        ]
    )
    assert result.returncode == 0, result.stderr
    return load_descriptor_set(out)


def streaming_kind(method: descriptor_pb2.MethodDescriptorProto) -> str:
    return {
        (False, False): UNARY,
        (True, False): CLIENT_STREAM,
        (False, True): SERVER_STREAM,
        (True, True): BIDI,
    }[(method.client_streaming, method.server_streaming)]


def services_of(
    descriptors: descriptor_pb2.FileDescriptorSet,
) -> dict[str, dict[str, descriptor_pb2.MethodDescriptorProto]]:
    found = {}
    for file in descriptors.file:
        for service in file.service:
            full_name = f"{file.package}.{service.name}" if file.package else service.name
            found[full_name] = {m.name: m for m in service.method}
    return found


def test_every_proto_compiles_with_grpc_tools(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    assert set(ALL_PROTOS) <= {f.name for f in descriptor_set.file}


@pytest.mark.parametrize("service", sorted(EXPECTED_SERVICES))
def test_service_methods_and_streaming(
    descriptor_set: descriptor_pb2.FileDescriptorSet, service: str
) -> None:
    services = services_of(descriptor_set)
    assert service in services, sorted(services)
    methods = services[service]
    expected = EXPECTED_SERVICES[service]
    assert set(methods) == set(expected)
    package = service.rsplit(".", 1)[0]
    for name, (kind, output) in expected.items():
        method = methods[name]
        assert streaming_kind(method) == kind, name
        assert method.output_type == (output or f".{package}.{name}Response"), name


def test_fits_are_long_running_operations(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    methods = services_of(descriptor_set)["lwdock.spec.v1.SpecService"]
    for name in ("FitTableSpecification", "FitImageSpecification", "FitTextSpecification"):
        assert methods[name].output_type == OPERATION, name
        # google.longrunning.operation_info (field 1049 of MethodOptions) names the types.
        options = methods[name].options.SerializeToString()
        assert b"lwdock.common.v1.RkmeSpecification" in options, name
        assert b"lwdock.spec.v1.FitSpecificationMetadata" in options, name


@pytest.mark.parametrize("name", OPTIONED_PROTOS)
def test_our_protos_set_language_options(
    descriptor_set: descriptor_pb2.FileDescriptorSet, name: str
) -> None:
    file = next(f for f in descriptor_set.file if f.name == name)
    missing = [o for o in REQUIRED_FILE_OPTIONS if not file.options.HasField(o)]
    assert not missing, f"{name} lacks options {missing}"
    assert file.options.java_multiple_files, name
    # Options follow the package: lwdock.spec.v1 -> .../lwdock/spec/v1;specv1, Lwdock.Spec.V1.
    parts = file.package.split(".")
    go_suffix = "/" + "/".join(parts) + ";" + "".join(parts[1:])
    assert file.options.go_package.endswith(go_suffix), file.options.go_package
    assert file.options.csharp_namespace == ".".join(p.capitalize() for p in parts), name
    assert file.options.java_package.endswith(file.package), name


def test_our_protos_set_language_options_in_source() -> None:
    """The same check on the text, so it holds without compiling anything."""
    for name in OPTIONED_PROTOS:
        text = (PROTOS / name).read_text()
        for option in REQUIRED_FILE_OPTIONS:
            assert re.search(rf"^option {option} = ", text, re.M), f"{name}: no {option}"


def test_buf_lint_is_clean() -> None:
    result = run([venv_bin("buf"), "lint"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_are_current() -> None:
    result = run([sys.executable, "scripts/gen_protos.py", "--check"])
    assert result.returncode == 0, result.stdout + result.stderr
