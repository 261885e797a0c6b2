"""Hostile and broken zips, made here in memory, against lwdock.package.zipsafe."""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from lwdock.errors import InvalidArgument, ResourceExhausted
from lwdock.package.zipsafe import ZipLimits, open_zip
from tests.conftest import FIXTURES

Entry = tuple[str | zipfile.ZipInfo, bytes]


def make_zip(entries: list[Entry], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def unix(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def violations(data: bytes, limits: ZipLimits | None = None) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        open_zip(data, limits)
    return {v.field: v.description for v in info.value.violations}


def descriptions(data: bytes, limits: ZipLimits | None = None) -> str:
    return " | ".join(f"{k}: {v}" for k, v in violations(data, limits).items())


def test_plain_zip_indexed() -> None:
    data = make_zip([("learnware.yaml", b"model: {}\n"), ("sub/w.bin", b"\0" * 10)])
    with open_zip(data) as z:
        assert list(z.members) == ["learnware.yaml", "sub/w.bin"]
        assert z.directories == {"sub"}
        assert z.root_folder is None
        assert z.read("sub/w.bin") == b"\0" * 10
        assert z.members["sub/w.bin"].size == 10
        assert "learnware.yaml" in z and "nope" not in z


def test_reference_fixture_opens(tmp_path: Path) -> None:
    path = FIXTURES / "learnware_digits_svc.zip"
    with open_zip(path) as z:  # from a path
        assert set(z.members) == {
            "requirements.txt",
            "__init__.py",
            "stat_spec.json",
            "learnware.yaml",
            "model.pkl",
        }
    with open_zip(path.read_bytes()) as z:  # from bytes
        assert z.read("requirements.txt") == b"scikit-learn==1.9.1\n"


def test_folder_wrapped_zip_is_stripped() -> None:
    data = make_zip(
        [
            ("my-learnware/", b""),
            ("my-learnware/learnware.yaml", b"x"),
            ("my-learnware/pkg/model.py", b"y"),
            ("__MACOSX/my-learnware/._learnware.yaml", b"junk"),
        ]
    )
    with open_zip(data) as z:
        assert z.root_folder == "my-learnware"
        assert set(z.members) == {"learnware.yaml", "pkg/model.py"}
        assert z.directories == {"pkg"}
        assert z.read("learnware.yaml") == b"x"
        assert z.members["learnware.yaml"].archive_name == "my-learnware/learnware.yaml"


def test_two_top_folders_or_a_root_file_not_stripped() -> None:
    with open_zip(make_zip([("a/x", b"1"), ("b/y", b"2")])) as z:
        assert z.root_folder is None and set(z.members) == {"a/x", "b/y"}
    with open_zip(make_zip([("a/x", b"1"), ("learnware.yaml", b"2")])) as z:
        assert z.root_folder is None


def test_dot_components_normalized() -> None:
    with open_zip(make_zip([("./learnware.yaml", b"1"), ("a//b", b"2")])) as z:
        assert set(z.members) == {"learnware.yaml", "a/b"}


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/evil.dll", "absolute path"),
        ("../evil", "'..'"),
        ("a/../../evil", "'..'"),
        ("a\\..\\evil", "backslash"),
        ("bad\x01name", "control character"),
    ],
)
def test_unsafe_names_rejected(name: str, why: str) -> None:
    got = violations(make_zip([("learnware.yaml", b"ok"), (name, b"evil")]))
    assert list(got) == ["package"]
    assert why in got["package"] and repr(name) in got["package"]


def test_overlong_name_rejected() -> None:
    got = violations(make_zip([("a" * 600, b"x")]))
    assert "longer than" in got["package"]


def test_duplicate_names_rejected() -> None:
    got = violations(make_zip([("learnware.yaml", b"one"), ("learnware.yaml", b"two")]))
    assert got == {"package.learnware.yaml": "duplicate entry"}
    got = violations(make_zip([("learnware.yaml", b"one"), ("./learnware.yaml", b"two")]))
    assert got == {"package.learnware.yaml": "duplicate entry"}


def test_file_and_directory_of_one_name_rejected() -> None:
    got = violations(make_zip([("model", b"one"), ("model/w.bin", b"two")]))
    assert "both a file and a directory" in got["package.model"]


# --- entry types and flags ----------------------------------------------------------------


def test_symlink_entry_rejected() -> None:
    link = unix("stat_spec.json", stat.S_IFLNK | 0o777)
    got = violations(make_zip([("learnware.yaml", b"ok"), (link, b"/etc/passwd")]))
    assert "symbolic link" in got["package.stat_spec.json"]


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        (stat.S_IFCHR | 0o666, "device file"),
        (stat.S_IFBLK | 0o660, "device file"),
        (stat.S_IFIFO | 0o644, "named pipe"),
        (stat.S_IFSOCK | 0o644, "socket"),
    ],
)
def test_device_and_special_files_rejected(mode: int, what: str) -> None:
    got = violations(make_zip([(unix("dev/null", mode), b"")]))
    assert what in got["package.dev/null"]


def test_regular_and_modeless_entries_accepted() -> None:
    entries: list[Entry] = [
        (unix("a.py", stat.S_IFREG | 0o644), b"1"),
        (unix("d/", stat.S_IFDIR | 0o755), b""),
        (zipfile.ZipInfo("b.py"), b"2"),  # MS-DOS style, no mode bits
    ]
    with open_zip(make_zip(entries)) as z:
        assert set(z.members) == {"a.py", "b.py"}


def test_setuid_bits_do_not_matter_but_type_does() -> None:
    with open_zip(make_zip([(unix("a.py", stat.S_IFREG | 0o4755), b"1")])) as z:
        assert "a.py" in z


def test_encrypted_entry_rejected() -> None:
    # zipfile cannot write encrypted entries: set the flag bit in both headers afterwards.
    data = bytearray(make_zip([("learnware.yaml", b"ok"), ("model.pkl", b"secret")]))
    local = data.find(b"PK\x03\x04", 1)
    central = data.rfind(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    got = violations(bytes(data))
    assert "encrypted" in got["package.model.pkl"]


def test_unsupported_compression_method_rejected() -> None:
    data = bytearray(make_zip([("a.txt", b"hello")], zipfile.ZIP_STORED))
    # Patch the method (offset 10 in the central directory header) to 99 (AES).
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 10, 99)
    assert "compression method 99" in violations(bytes(data))["package.a.txt"]


def test_not_a_zip() -> None:
    assert "not a zip" in violations(b"this is not a zip archive at all")["package"]
    assert "not a zip" in violations(b"")["package"]


def test_corrupt_entry_data_is_invalid_argument_on_read() -> None:
    payload = bytes(range(256)) * 64
    data = bytearray(make_zip([("w.bin", payload)], zipfile.ZIP_STORED))
    at = data.find(payload[:64])
    data[at + 100] ^= 0xFF
    with open_zip(bytes(data)) as z, pytest.raises(InvalidArgument) as info:
        z.read("w.bin")
    assert info.value.violations[0].field == "package.w.bin"


def test_declared_size_smaller_than_data_is_caught_on_read() -> None:
    payload = b"A" * 1000
    data = bytearray(make_zip([("w.bin", payload)], zipfile.ZIP_STORED))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<L", data, cd + 24, 10)  # uncompressed size in the central directory
    with open_zip(bytes(data)) as z:
        assert z.members["w.bin"].size == 10
        with pytest.raises(InvalidArgument):
            z.read("w.bin")


# --- limits -------------------------------------------------------------------------------


def test_zip_bomb_by_entry_ratio() -> None:
    bomb = make_zip([("learnware.yaml", b"ok"), ("weights.bin", b"\0" * (8 * 1024**2))])
    assert len(bomb) < 64 * 1024
    got = violations(bomb)
    assert "zip bomb" in got["package.weights.bin"]


def test_zip_bomb_by_overall_ratio() -> None:
    # Many entries, each below the per-entry threshold; together far above the archive size.
    entries: list[Entry] = [(f"part{i}.bin", b"\0" * 200_000) for i in range(20)]
    limits = ZipLimits(ratio_min_bytes=1024**2, max_entry_ratio=1e9)
    got = violations(make_zip(entries), limits)
    assert "uncompressed / archive size" in got["package"]


def test_compressible_but_small_files_fine() -> None:
    with open_zip(make_zip([("big.json", b"[" + b"0," * 100_000 + b"0]")])) as z:
        assert "big.json" in z


def test_too_many_entries() -> None:
    data = make_zip([(f"f{i}", b"") for i in range(6)])
    with pytest.raises(ResourceExhausted) as info:
        open_zip(data, ZipLimits(max_entries=5))
    assert info.value.limit == "5"
    open_zip(data, ZipLimits(max_entries=6)).close()


def test_too_many_entries_caught_before_zipfile_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(make_zip([(f"f{i}", b"") for i in range(6)]))
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 1, 1)  # entries on disk, total entries: a lie

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile must not build an object per entry first")

    monkeypatch.setattr(zipfile, "ZipFile", no_parse)
    with pytest.raises(ResourceExhausted):
        open_zip(bytes(data), ZipLimits(max_entries=5))


def test_archive_too_large() -> None:
    data = make_zip([("a", b"x" * 1000)], zipfile.ZIP_STORED)
    with pytest.raises(ResourceExhausted) as info:
        open_zip(data, ZipLimits(max_archive_bytes=500))
    assert info.value.subject == "package"


def test_archive_too_large_from_path(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    path.write_bytes(make_zip([("a", b"x" * 1000)], zipfile.ZIP_STORED))
    with pytest.raises(ResourceExhausted):
        open_zip(path, ZipLimits(max_archive_bytes=500))


def test_entry_too_large_uncompressed() -> None:
    data = make_zip([("a", b"x" * 5000)])
    with pytest.raises(ResourceExhausted) as info:
        open_zip(data, ZipLimits(max_entry_bytes=4096))
    assert info.value.subject == "package.a"


def test_total_too_large_uncompressed() -> None:
    data = make_zip([("a", b"x" * 3000), ("b", b"y" * 3000)])
    with pytest.raises(ResourceExhausted):
        open_zip(data, ZipLimits(max_total_bytes=5000))
    open_zip(data, ZipLimits(max_total_bytes=6000)).close()


def test_read_limit() -> None:
    with open_zip(make_zip([("a", b"x" * 100)])) as z, pytest.raises(ResourceExhausted):
        z.read("a", max_bytes=10)


def test_all_problems_in_one_error() -> None:
    got = violations(
        make_zip(
            [
                ("../evil", b""),
                ("/abs", b""),
                (unix("link", stat.S_IFLNK | 0o777), b"x"),
                ("dup", b""),
                ("dup", b""),
            ]
        )
    )
    assert set(got) == {"package", "package.link", "package.dup"}


# --- extraction ---------------------------------------------------------------------------


def test_extract_writes_only_members(tmp_path: Path) -> None:
    data = make_zip([("wrap/learnware.yaml", b"x"), ("wrap/a/b.bin", b"y")])
    with open_zip(data) as z:
        z.extract_to(tmp_path / "out")
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == ["a", "a/b.bin", "learnware.yaml"]
    assert (tmp_path / "out" / "a" / "b.bin").read_bytes() == b"y"
    assert stat.S_IMODE((tmp_path / "out" / "learnware.yaml").stat().st_mode) & 0o022 == 0


def test_extract_refuses_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("keep")
    with open_zip(make_zip([("a", b"x")])) as z, pytest.raises(FileExistsError):
        z.extract_to(tmp_path)
    assert (tmp_path / "old").read_text() == "keep"


def test_zip64_end_record_read() -> None:
    # More than 65,535 entries: zipfile writes a zip64 end of central directory record.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(65_600):
            zf.writestr(f"f{i}", b"")
    data = buf.getvalue()
    assert b"PK\x06\x06" in data
    with pytest.raises(ResourceExhausted):
        open_zip(data, ZipLimits(max_entries=65_599))
    with open_zip(data, ZipLimits(max_entries=65_600)) as z:
        assert len(z.members) == 65_600
