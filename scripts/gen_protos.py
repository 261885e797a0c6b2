"""Generate the committed Python stubs for protos/lwdock/** with the pinned grpcio-tools.

    python scripts/gen_protos.py          # write lwdock/<service>/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --check  # fail if the committed stubs differ

Vendored googleapis and grpc.health protos are only import paths: their Python modules come
from googleapis-common-protos and grpcio-health-checking at run time.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "lwdock"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every generated directory is a regular package so wheels include it.
    for directory in [p for p in (out / PACKAGE).rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()


def generated_files(base: Path) -> set[Path]:
    return {
        p.relative_to(base)
        for p in (base / PACKAGE).rglob("*")
        if p.is_file() and p.name.endswith(SUFFIXES)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = generated_files(out)
        committed = generated_files(ROOT)
        if check:
            differ = sorted(
                str(p)
                for p in fresh | committed
                if p not in fresh or p not in committed or not filecmp.cmp(out / p, ROOT / p, False)
            )
            if differ:
                print("stubs out of date; run `make protos`:\n  " + "\n  ".join(differ))
                return 1
            print(f"{len(fresh)} generated stubs up to date")
            return 0
        for stale in committed - fresh:
            (ROOT / stale).unlink()
        for path in sorted(fresh):
            target = ROOT / path
            target.parent.mkdir(parents=True, exist_ok=True)
            for package_dir in [target.parent, *target.parent.parents]:
                if package_dir == ROOT:
                    break
                (package_dir / "__init__.py").touch(exist_ok=True)
            shutil.copyfile(out / path, target)
        print(f"wrote {len(fresh)} stub files")
        return 0


if __name__ == "__main__":
    sys.exit(main())
