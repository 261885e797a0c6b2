"""Open an untrusted zip safely: names, entry types, encryption and size limits (REFERENCE.md
§1.1, §12.1 S5/S7).

`open_zip` checks the whole archive before anything is read: the central directory is walked
without allocating per entry (so a huge entry count costs nothing), then every entry's name,
type bits, flags, compression method and declared sizes are checked. Reads are bounded by the
declared sizes (zipfile stops there and verifies the CRC). Nothing is ever written to disk
except by `SafeZip.extract_to`, which writes only the checked members.

Name rules: no absolute paths or drive letters, no `..`, no backslashes or control characters;
`.` and empty components are dropped (`./a//b` -> `a/b`). One wrapping top-level folder is
stripped (Beimingwu accepts `folder/learnware.yaml`); macOS `__MACOSX/` metadata is skipped.

Limit breaches (archive size, entry count, entry and total uncompressed size) raise
`ResourceExhausted`; every other problem is collected into one `InvalidArgument` whose fields
are `package` (archive-level and name problems) or `package.<name>` (an entry's problems).
"""

from __future__ import annotations

import io
import lzma
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from lwdock.errors import FieldViolation, InvalidArgument, ResourceExhausted

FIELD = "package"

MAX_ARCHIVE_BYTES = 512 * 1024**2
MAX_ENTRIES = 10_000
MAX_ENTRY_BYTES = 1024**3
MAX_TOTAL_BYTES = 2 * 1024**3
# Uncompressed / compressed. Deflate tops out near 1,032; real packages (pickles, JSON) stay
# far below 100. Applied only above RATIO_MIN_BYTES, so small repetitive files are fine.
MAX_ENTRY_RATIO = 200.0
MAX_TOTAL_RATIO = 100.0
RATIO_MIN_BYTES = 1024**2
MAX_NAME_CHARS = 512
# Violations listed in one error at most; the rest are counted.
MAX_REPORTED = 100

ALLOWED_COMPRESSION = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_FLAG_ENCRYPTED = 0x1
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_MASKED_HEADERS = 0x2000
_IGNORED_TOP = "__MACOSX"
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header, 46 bytes
_CENTRAL_SIG = b"PK\x01\x02"


@dataclass(frozen=True)
class ZipLimits:
    max_archive_bytes: int = MAX_ARCHIVE_BYTES
    max_entries: int = MAX_ENTRIES
    max_entry_bytes: int = MAX_ENTRY_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_entry_ratio: float = MAX_ENTRY_RATIO
    max_total_ratio: float = MAX_TOTAL_RATIO
    ratio_min_bytes: int = RATIO_MIN_BYTES
    max_name_chars: int = MAX_NAME_CHARS


@dataclass(frozen=True)
class ZipMember:
    """A regular file of the package. `name` is its path inside the package (after stripping a
    wrapping folder); `archive_name` the name stored in the zip."""

    name: str
    archive_name: str
    size: int
    compressed_size: int
    crc: int


@dataclass
class SafeZip:
    """A checked archive. `members` maps package paths to files (in archive order);
    `directories` holds every directory path (explicit or implied). Close it (or use `with`)."""

    members: dict[str, ZipMember]
    directories: frozenset[str]
    root_folder: str | None
    archive_size: int
    uncompressed_size: int
    _zip: zipfile.ZipFile = field(repr=False)
    _infos: dict[str, zipfile.ZipInfo] = field(repr=False)

    def __contains__(self, name: object) -> bool:
        return name in self.members

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The member's bytes. ResourceExhausted if it is larger than `max_bytes`;
        InvalidArgument (field `package.<name>`) if it is corrupt; KeyError if absent."""
        member = self.members[name]
        if max_bytes is not None and member.size > max_bytes:
            raise ResourceExhausted(
                f"{FIELD}.{name} is {member.size:,} bytes; the limit is {max_bytes:,}",
                subject=f"{FIELD}.{name}",
                limit=str(max_bytes),
            )
        return b"".join(self._chunks(name))

    def _chunks(self, name: str) -> Iterator[bytes]:
        member = self.members[name]
        left = member.size
        try:
            with self._zip.open(self._infos[name]) as f:
                while True:
                    chunk = f.read(min(_CHUNK, left + 1))
                    if not chunk:
                        break
                    left -= len(chunk)
                    if left < 0:  # zipfile stops at the declared size; never trust that alone
                        raise InvalidArgument.for_field(
                            f"{FIELD}.{name}", "larger than its declared size"
                        )
                    yield chunk
        except (
            zipfile.BadZipFile,
            EOFError,
            OSError,
            ValueError,
            RuntimeError,
            zlib.error,
            lzma.LZMAError,
        ) as exc:
            raise InvalidArgument.for_field(f"{FIELD}.{name}", f"corrupt entry: {exc}") from None
        if left != 0:
            raise InvalidArgument.for_field(f"{FIELD}.{name}", "shorter than its declared size")

    def extract_to(self, dest: str | os.PathLike[str]) -> Path:
        """Write the members (stripped names, modes 0o644 / 0o755 dirs) under `dest`, which must
        be empty or absent. Nothing outside `dest` is ever written."""
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise FileExistsError(f"{root} is not empty")
        base = root.resolve()
        for directory in sorted(self.directories):
            (base / directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        for name in self.members:
            target = (base / name).resolve()
            if base not in target.parents:  # cannot happen after the name checks; be sure
                raise InvalidArgument.for_field(FIELD, f"entry {name!r} escapes the package")
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as out:
                for chunk in self._chunks(name):
                    out.write(chunk)
        return root

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def raise_violations(violations: list[FieldViolation], summary: str) -> None:
    """Raise one InvalidArgument listing at most MAX_REPORTED violations (the rest counted)."""
    if not violations:
        return
    shown = violations[:MAX_REPORTED]
    if len(violations) > MAX_REPORTED:
        shown.append(
            FieldViolation(FIELD, f"... and {len(violations) - MAX_REPORTED:,} more problems")
        )
    raise InvalidArgument.of(shown, summary)


def normalize_name(name: str, *, max_chars: int = MAX_NAME_CHARS) -> tuple[str | None, str]:
    """(the normalized relative path, "") or (None, why it is unsafe). A trailing `/` is kept
    off; `.` and empty components are dropped."""
    if not name:
        return None, "empty name"
    if len(name) > max_chars:
        return None, f"name longer than {max_chars} characters"
    if "\\" in name:
        return None, "backslash in name (a Windows path separator)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None, "control character in name"
    if name.startswith("/") or _DRIVE.match(name):
        return None, "absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "'..' escapes the package root"
    if not parts:
        return None, "names no file"
    return "/".join(parts), ""


def open_zip(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    limits: ZipLimits | None = None,
) -> SafeZip:
    """Check an archive given as bytes or a file path; return its safe member index.

    Raises ResourceExhausted for a limit breach, InvalidArgument for everything else."""
    limits = limits or ZipLimits()
    fp: BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        data = source if isinstance(source, bytes) else bytes(source)
        size = len(data)
        _check_archive_size(size, limits)
        fp = io.BytesIO(data)
    else:
        size = os.stat(source).st_size
        _check_archive_size(size, limits)
        fp = open(source, "rb")  # owned by the returned SafeZip
    try:
        _walk_central_directory(fp, size, limits)
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
            raise InvalidArgument.for_field(FIELD, f"not a valid zip archive: {exc}") from None
        try:
            return _index(zf, size, limits)
        except BaseException:
            zf.close()
            raise
    except BaseException:
        fp.close()
        raise


def _check_archive_size(size: int, limits: ZipLimits) -> None:
    if size > limits.max_archive_bytes:
        raise ResourceExhausted(
            f"the package is {size:,} bytes; the limit is {limits.max_archive_bytes:,}",
            subject=FIELD,
            limit=str(limits.max_archive_bytes),
        )


def _too_many(limits: ZipLimits) -> ResourceExhausted:
    return ResourceExhausted(
        f"the package has more than {limits.max_entries:,} entries",
        subject=FIELD,
        limit=str(limits.max_entries),
    )


def _walk_central_directory(fp: BinaryIO, size: int, limits: ZipLimits) -> None:
    """Count central directory records before zipfile builds an object per entry."""
    not_zip = InvalidArgument.for_field(FIELD, "not a zip archive (no end of central directory)")
    if size < _EOCD.size:
        raise not_zip
    # As zipfile: an EOCD without comment at the very end, else the last one in the tail.
    fp.seek(size - _EOCD.size)
    eocd = fp.read(_EOCD.size)
    eocd_at = size - _EOCD.size
    if not (eocd[:4] == _EOCD_SIG and eocd[-2:] == b"\0\0"):
        tail_len = min(size, _EOCD.size + 0xFFFF)
        fp.seek(size - tail_len)
        tail = fp.read(tail_len)
        pos = tail.rfind(_EOCD_SIG)
        if pos < 0 or len(tail) - pos < _EOCD.size:
            raise not_zip
        eocd_at = size - tail_len + pos
        eocd = tail[pos : pos + _EOCD.size]
    declared, cd_size = _EOCD.unpack(eocd)[4:6]
    cd_end = eocd_at
    # As zipfile: a zip64 locator right before the EOCD wins, whatever the EOCD says.
    locator_at = eocd_at - _ZIP64_LOCATOR.size
    if locator_at >= 0:
        fp.seek(locator_at)
        locator = fp.read(_ZIP64_LOCATOR.size)
        if locator[:4] == _ZIP64_LOCATOR_SIG:
            record_at = locator_at - _ZIP64_EOCD.size
            if record_at < 0:
                raise not_zip
            fp.seek(record_at)
            record = fp.read(_ZIP64_EOCD.size)
            if len(record) < _ZIP64_EOCD.size or record[:4] != _ZIP64_EOCD_SIG:
                raise not_zip
            declared, cd_size = _ZIP64_EOCD.unpack(record)[7:9]
            cd_end = record_at
    if declared > limits.max_entries:
        raise _too_many(limits)
    cd_start = cd_end - cd_size
    if cd_start < 0:
        raise not_zip
    fp.seek(cd_start)
    directory = fp.read(cd_size)
    offset = count = 0
    while offset + _CENTRAL.size <= len(directory):
        header = _CENTRAL.unpack_from(directory, offset)
        if header[0] != _CENTRAL_SIG:
            break
        count += 1
        if count > limits.max_entries:
            raise _too_many(limits)
        offset += _CENTRAL.size + header[12] + header[13] + header[14]
    fp.seek(0)


def _entry_kind(info: zipfile.ZipInfo) -> str:
    """Empty for a regular file or directory, else what the mode bits say the entry is."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == 0 or kind == stat.S_IFREG or (kind == stat.S_IFDIR and info.is_dir()):
        return ""
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        return "device file"
    if kind == stat.S_IFIFO:
        return "named pipe"
    if kind == stat.S_IFSOCK:
        return "socket"
    if kind == stat.S_IFDIR:
        return "directory mode on a file entry"
    return "special file"


def _index(zf: zipfile.ZipFile, size: int, limits: ZipLimits) -> SafeZip:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise _too_many(limits)
    problems: list[FieldViolation] = []
    files: dict[str, zipfile.ZipInfo] = {}
    dirs: set[str] = set()
    total = 0
    for info in infos:
        name, why = normalize_name(info.filename, max_chars=limits.max_name_chars)
        if name is None:
            problems.append(FieldViolation(FIELD, f"entry {info.filename!r}: {why}"))
            continue
        where = f"{FIELD}.{name}"
        if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED_HEADERS):
            problems.append(FieldViolation(where, "encrypted entries are not accepted"))
        kind = _entry_kind(info)
        if kind:
            problems.append(FieldViolation(where, f"{kind}: only regular files are accepted"))
        if info.is_dir():
            if name in dirs or name in files:
                problems.append(FieldViolation(where, "duplicate entry"))
            dirs.add(name)
            continue
        if info.compress_type not in ALLOWED_COMPRESSION:
            problems.append(
                FieldViolation(where, f"unsupported compression method {info.compress_type}")
            )
        if info.file_size > limits.max_entry_bytes:
            raise ResourceExhausted(
                f"{where} is {info.file_size:,} bytes uncompressed; "
                f"the limit is {limits.max_entry_bytes:,}",
                subject=where,
                limit=str(limits.max_entry_bytes),
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ResourceExhausted(
                f"the package holds more than {limits.max_total_bytes:,} bytes uncompressed",
                subject=FIELD,
                limit=str(limits.max_total_bytes),
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_min_bytes and ratio > limits.max_entry_ratio:
            problems.append(
                FieldViolation(
                    where,
                    f"compression ratio {ratio:,.0f} exceeds {limits.max_entry_ratio:,.0f} "
                    "(a zip bomb?)",
                )
            )
        if name in files or name in dirs:
            problems.append(FieldViolation(where, "duplicate entry"))
            continue
        files[name] = info
    overall = total / max(size, 1)
    if total > limits.ratio_min_bytes and overall > limits.max_total_ratio:
        problems.append(
            FieldViolation(
                FIELD,
                f"compression ratio {overall:,.0f} (uncompressed / archive size) exceeds "
                f"{limits.max_total_ratio:,.0f} (a zip bomb?)",
            )
        )
    implied = {"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)}
    for name in files:
        if name in implied:
            problems.append(FieldViolation(f"{FIELD}.{name}", "both a file and a directory"))
    raise_violations(problems, "invalid package")

    def kept(name: str) -> bool:
        return name.split("/", 1)[0] != _IGNORED_TOP

    names = [n for n in files if kept(n)]
    all_dirs = {d for d in dirs | implied if kept(d)}
    root = _wrapping_folder(names, all_dirs)
    cut = len(root) + 1 if root else 0
    members = {
        n[cut:]: ZipMember(
            name=n[cut:],
            archive_name=files[n].filename,
            size=files[n].file_size,
            compressed_size=files[n].compress_size,
            crc=files[n].CRC,
        )
        for n in names
    }
    return SafeZip(
        members=members,
        directories=frozenset(d[cut:] for d in all_dirs if d != root),
        root_folder=root,
        archive_size=size,
        uncompressed_size=total,
        _zip=zf,
        _infos={n[cut:]: files[n] for n in names},
    )


def _wrapping_folder(files: list[str], dirs: set[str]) -> str | None:
    """The single top-level folder that holds everything, if there is one and no root file."""
    tops = {n.split("/", 1)[0] for n in files} | {d.split("/", 1)[0] for d in dirs}
    if len(tops) != 1 or any("/" not in n for n in files):
        return None
    (top,) = tops
    return top if top in dirs else None
