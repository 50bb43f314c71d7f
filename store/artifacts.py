"""A content-addressed artifact store (a local directory or any filesystem URI), and canonical
digests of tables.

Every artifact is stored once under the SHA-256 of its content::

    <data_dir>/artifacts/sha256/ab/abcdef...<suffix>

Writes are atomic (a temporary file in the same directory tree, then
``os.replace``); writing the same content again is a no-op. Reads verify the
digest, so a file altered on disk raises :class:`~modelog.models.errors.ArtifactDigestMismatch`
instead of silently returning wrong bytes. URIs are ``file://`` URLs of the
stored files; a URI or digest that would lead outside the store's root is
rejected with :class:`ArtifactPathError`.

Tables (datasets) are addressed by their *canonical table digest*
(:func:`table_digest`), which depends only on the schema and the rows -- not on
how the table was chunked, sliced or written, nor on whether it came from
pandas or Arrow -- and are stored as Parquet files named
``<digest>.table.parquet``.

Examples
--------
>>> import tempfile, pathlib
>>> store = ArtifactStore(pathlib.Path(tempfile.mkdtemp()) / "artifacts")
>>> digest, uri = store.put_bytes(b"hello", suffix=".txt")
>>> digest[:12], uri.endswith(digest + ".txt")
('2cf24dba5fb0', True)
>>> store.put_bytes(b"hello", suffix=".txt") == (digest, uri)
True
>>> store.get_bytes(digest)
b'hello'
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from modelog.models.errors import ArtifactDigestMismatch
from modelog.models.tabular import canonical_table
from modelog.store.errors import ArtifactNotFoundError, ArtifactPathError

if TYPE_CHECKING:
    import pyarrow as pa

    from modelog.config import Settings

__all__ = ["TABLE_SUFFIX", "ArtifactStore", "RemoteArtifactStore", "canonical_table",
           "load_table", "open_store", "table_digest"]

TABLE_SUFFIX = ".table.parquet"
"""Suffix of tables stored by :meth:`ArtifactStore.put_table` (named by table digest)."""

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9_-]{1,16}){0,3}$")
_STORED_NAME = re.compile(r"^(?P<digest>[0-9a-f]{64})(?P<suffix>(\.[A-Za-z0-9_-]{1,16}){0,3})$")
_CHUNK = 1 << 20



def _source_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The existing file at ``path`` and the suffix its copy keeps (up to three plain ones)."""
    src = Path(path)
    if not src.is_file():
        raise ArtifactNotFoundError(f"no file at {src}; pass the path of an existing file")
    suffix = "".join(src.suffixes[-3:])
    if not _SUFFIX.fullmatch(suffix):
        suffix = src.suffix if _SUFFIX.fullmatch(src.suffix) else ""
    return src, suffix

class _HashingSink:
    """A write-only file object that only feeds a SHA-256 (no copy of the data kept)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        return view.nbytes

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


def table_digest(table: pa.Table) -> str:
    """The canonical SHA-256 of a table: same schema and rows -> same digest.

    It hashes the Arrow IPC stream (uncompressed) of :func:`canonical_table`, so
    chunking, slicing, schema metadata (pandas adds some), ``large_string`` vs
    ``string`` and dictionary encoding do not change it; column names, types,
    nullability, row order and values do.

    Examples
    --------
    >>> import pyarrow as pa
    >>> a = pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    >>> b = pa.concat_tables([a.slice(0, 1), a.slice(1)])
    >>> table_digest(a) == table_digest(b)
    True
    >>> table_digest(a) == table_digest(a.slice(1))
    False
    """
    return _ipc_digest(canonical_table(table))


def _ipc_digest(canon: pa.Table) -> str:
    import pyarrow as pa

    sink = _HashingSink()
    options = pa.ipc.IpcWriteOptions(compression=None)
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), canon.schema, options=options) as w:
        w.write_table(canon)
    return sink.hash.hexdigest()


def load_table(data: Any) -> pa.Table:
    """Turn ``data`` into a ``pyarrow.Table``.

    ``data`` is a ``pyarrow.Table``, a ``pandas.DataFrame`` (its index is
    dropped unless it is named), or a path (``str``/``Path``) to a ``.parquet``
    or ``.csv`` file.

    Raises
    ------
    TypeError
        For any other kind of object, or a file with another extension.
    ArtifactNotFoundError
        When the path does not exist.
    """
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise ArtifactNotFoundError(f"no file at {path}; pass an existing .parquet or .csv")
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        raise TypeError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        named_index = any(n is not None for n in data.index.names)
        return pa.Table.from_pandas(data, preserve_index=named_index)
    raise TypeError(
        f"cannot make a table from {type(data).__name__}; pass a pyarrow.Table, a "
        "pandas.DataFrame, or the path of a .parquet or .csv file"
    )


class ArtifactStore:
    """Content-addressed files under ``root`` (normally ``<data_dir>/artifacts``).

    Parameters
    ----------
    root
        Directory of the store; created on first write.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = ArtifactStore(pathlib.Path(tempfile.mkdtemp()))
    >>> d, uri = store.put_bytes(b"weights")
    >>> store.exists(d), store.exists("0" * 64)
    (True, False)
    >>> store.get_bytes(uri)
    b'weights'
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        """The store of a deployment: ``settings.artifact_uri`` (``MODELOG_ARTIFACT_URI``)
        when set -- a directory or a filesystem URI, see :func:`open_store` -- else
        ``settings.data_dir / "artifacts"``."""
        if settings.artifact_uri:
            return open_store(settings.artifact_uri)
        return cls(Path(settings.data_dir) / "artifacts")

    # -- layout ----------------------------------------------------------
    def path_for(self, digest: str, suffix: str = "") -> Path:
        """Where content with ``digest`` and ``suffix`` is (or would be) stored."""
        _check_digest(digest)
        if not _SUFFIX.fullmatch(suffix):
            raise ArtifactPathError(
                f"suffix {suffix!r} is not allowed: use up to three '.ext' parts of "
                "letters, digits, '_' or '-' (for example '.pkl' or '.tar.gz')"
            )
        return self.root / "sha256" / digest[:2] / f"{digest}{suffix}"

    @staticmethod
    def uri_of(path: Path) -> str:
        """The ``file://`` URI of a stored file."""
        return path.absolute().as_uri()

    def _find(self, digest: str) -> Path | None:
        folder = self.root / "sha256" / digest[:2]
        if not folder.is_dir():
            return None
        for p in folder.iterdir():
            m = _STORED_NAME.fullmatch(p.name)
            if m and m.group("digest") == digest:
                return p
        return None

    def resolve(self, uri_or_digest: str) -> Path:
        """The stored file a ``file://`` URI or a SHA-256 digest designates.

        Raises
        ------
        ArtifactPathError
            When the reference is neither, or leads outside the store.
        ArtifactNotFoundError
            When nothing is stored there.
        """
        if _DIGEST.fullmatch(uri_or_digest):
            found = self._find(uri_or_digest)
            if found is None:
                raise ArtifactNotFoundError(
                    f"no artifact with digest {uri_or_digest} in {self.root}; was it stored "
                    "with another data directory (MODELOG_DATA_DIR)?"
                )
            return found
        parsed = urllib.parse.urlparse(uri_or_digest)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ArtifactPathError(
                f"{uri_or_digest!r} is neither a sha256 digest (64 hex digits) nor a "
                "file:// URI of this artifact store"
            )
        path = Path(urllib.request.url2pathname(parsed.path))
        root = self.root.resolve()
        real = path.resolve()
        m = _STORED_NAME.fullmatch(real.name)
        if not real.is_relative_to(root) or m is None or real != self.path_for(
            m.group("digest"), m.group("suffix")
        ).resolve():
            raise ArtifactPathError(
                f"{uri_or_digest!r} is not a file of the artifact store at {root}; "
                "only URIs this store returned can be read"
            )
        if not real.is_file():
            raise ArtifactNotFoundError(f"artifact {uri_or_digest} is missing from {root}")
        return real

    def exists(self, digest: str) -> bool:
        """Whether content with this SHA-256 (or table digest) is stored."""
        _check_digest(digest)
        return self._find(digest) is not None

    # -- writing ---------------------------------------------------------
    def _atomic_write(self, target: Path, write: Any) -> None:
        """Run ``write(fileobj)`` into a temporary file, then move it to ``target``."""
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        """Store ``data``; return ``(sha256 hex digest, file:// URI)``."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest, suffix)
        self._atomic_write(target, lambda f: f.write(data))
        return digest, self.uri_of(target)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, str, int]:
        """Store a copy of the file at ``path``; return ``(digest, uri, size)``.

        The file is read once, hashing and copying at the same time; its last
        one to three extensions (``.pkl``, ``.tar.gz``) are kept when they are
        plain.
        """
        src, suffix = _source_file(path)
        staging = self.root / "tmp"
        staging.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=staging)
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, src.open("rb") as f:
                for block in _blocks(f):
                    h.update(block)
                    out.write(block)
                    size += len(block)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            target = self.path_for(digest, suffix)
            if target.exists():
                Path(tmp).unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, self.uri_of(target), size

    def put_table(self, table: pa.Table, *, canonical: bool = False) -> tuple[str, str]:
        """Store a table as Parquet under its canonical digest; return ``(digest, uri)``.

        ``canonical=True`` says ``table`` already went through
        :func:`canonical_table` (saves a copy of the data).
        """
        import pyarrow.parquet as pq

        canon = table if canonical else canonical_table(table)
        digest = _ipc_digest(canon)
        target = self.path_for(digest, TABLE_SUFFIX)
        self._atomic_write(target, lambda f: pq.write_table(canon, f, compression="zstd"))
        return digest, self.uri_of(target)

    # -- reading ---------------------------------------------------------
    def read_bytes(self, uri_or_digest: str) -> bytes:
        """The raw content of an artifact (the caller verifies it against a digest it knows)."""
        return self.resolve(uri_or_digest).read_bytes()

    def get_bytes(self, uri_or_digest: str) -> bytes:
        """The content of an artifact, after checking it still matches its digest."""
        path = self.resolve(uri_or_digest)
        data = path.read_bytes()
        expected = _STORED_NAME.fullmatch(path.name)
        assert expected is not None  # resolve() guarantees the name
        if path.name.endswith(TABLE_SUFFIX):
            import pyarrow as pa
            import pyarrow.parquet as pq

            actual = table_digest(pq.read_table(pa.BufferReader(data)))
        else:
            actual = hashlib.sha256(data).hexdigest()
        _verify(path, expected.group("digest"), actual)
        return data

    def read_table(self, uri_or_digest: str) -> pa.Table:
        """A stored table (from :meth:`put_table`), verified against its digest."""
        import pyarrow.parquet as pq

        path = self.resolve(uri_or_digest)
        if not path.name.endswith(TABLE_SUFFIX):
            raise ArtifactPathError(
                f"{uri_or_digest} is not a table stored by put_table(); use get_bytes()"
            )
        table = pq.read_table(path)
        _verify(path, path.name[:64], table_digest(table))
        return table


class RemoteArtifactStore(ArtifactStore):
    """The same content-addressed layout on any pyarrow or fsspec filesystem.

    ``uri`` is the root, e.g. ``s3://bucket/modelog`` (pyarrow's S3 options go in
    the query string: ``?endpoint_override=host:9000&scheme=http&region=...``;
    credentials come from the usual environment variables), ``gs://bucket/m``,
    ``hdfs://...``, or any scheme fsspec knows (``memory://``, ``az://``...).
    Artifacts are written with one ``put`` each (object stores make that atomic)
    and read back verified; their URIs are ``<scheme>://<root path>/sha256/...``
    without the query string, so credentials and endpoints never enter the log.

    Examples
    --------
    >>> store = open_store("memory://modelog-doctest/artifacts")
    >>> digest, uri = store.put_bytes(b"weights", suffix=".bin")
    >>> uri.startswith("memory://modelog-doctest/artifacts/sha256/"), store.get_bytes(uri)
    (True, b'weights')
    """

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs

        parsed = urllib.parse.urlparse(uri)
        if not parsed.scheme:
            raise ArtifactPathError(f"{uri!r} is not a filesystem URI (scheme://...)")
        self.scheme = parsed.scheme
        self.uri = uri
        try:
            self.fs, base = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError
            self.fs, base = self._fsspec(parsed, exc)
        self.base = base.rstrip("/")
        self.root = Path(self.base)  # for messages only; never opened locally

    @staticmethod
    def _fsspec(parsed: urllib.parse.ParseResult, cause: Exception) -> tuple[Any, str]:
        import pyarrow.fs as pafs

        try:
            import fsspec
        except ImportError:
            raise ArtifactPathError(
                f"pyarrow cannot open {parsed.scheme}:// ({cause}) and fsspec is not "
                "installed; `pip install fsspec` (plus its plugin for that scheme)"
            ) from None
        try:
            fs = fsspec.filesystem(parsed.scheme)
        except (ValueError, ImportError) as exc:
            raise ArtifactPathError(f"no filesystem for {parsed.scheme}:// ({exc})") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), f"{parsed.netloc}{parsed.path}"

    # -- layout ----------------------------------------------------------
    def _key(self, digest: str, suffix: str = "") -> str:
        name = super().path_for(digest, suffix).name  # checks digest and suffix
        return f"{self.base}/sha256/{digest[:2]}/{name}"

    def uri_for_key(self, key: str) -> str:
        """The URI recorded in events for a stored object."""
        return f"{self.scheme}://{key}"

    def _info(self, key: str) -> Any:
        return self.fs.get_file_info(key)

    def _find_key(self, digest: str) -> str | None:
        import pyarrow.fs as pafs

        folder = f"{self.base}/sha256/{digest[:2]}"
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError:
            return None
        for info in infos:
            m = _STORED_NAME.fullmatch(info.base_name)
            if m and m.group("digest") == digest:
                return str(info.path)
        return None

    def _resolve_key(self, uri_or_digest: str) -> str:
        import pyarrow.fs as pafs

        if _DIGEST.fullmatch(uri_or_digest):
            found = self._find_key(uri_or_digest)
            if found is None:
                raise ArtifactNotFoundError(
                    f"no artifact with digest {uri_or_digest} under {self.uri}; was it stored "
                    "with another artifact store (MODELOG_ARTIFACT_URI)?")
            return found
        prefix = f"{self.scheme}://{self.base}/sha256/"
        rest = uri_or_digest[len(prefix):] if uri_or_digest.startswith(prefix) else ""
        folder, _, name = rest.partition("/")
        m = _STORED_NAME.fullmatch(name)
        if m is None or "/" in name or folder != m.group("digest")[:2]:
            raise ArtifactPathError(
                f"{uri_or_digest!r} is not an artifact of the store at {self.uri}; only "
                "URIs this store returned (or sha256 digests) can be read")
        key = self._key(m.group("digest"), m.group("suffix"))
        if self._info(key).type != pafs.FileType.File:
            raise ArtifactNotFoundError(f"artifact {uri_or_digest} is missing from {self.uri}")
        return key

    def path_for(self, digest: str, suffix: str = "") -> Path:
        """Not available: objects of a remote store have no local path."""
        raise ArtifactPathError(
            f"the artifact store at {self.uri} is remote: use its URIs (uri_for_key) or "
            "read_bytes()/get_bytes(), not local paths")

    def resolve(self, uri_or_digest: str) -> Path:
        """Not available for a remote store: read with :meth:`read_bytes` or :meth:`get_bytes`."""
        key = self._resolve_key(uri_or_digest)
        raise ArtifactPathError(
            f"{self.uri_for_key(key)} is in a remote artifact store and has no local path; "
            "read it with read_bytes() or get_bytes()")

    def exists(self, digest: str) -> bool:
        """Whether content with this SHA-256 (or table digest) is stored."""
        _check_digest(digest)
        return self._find_key(digest) is not None

    # -- writing ---------------------------------------------------------
    def _put(self, key: str, data: bytes) -> None:
        import pyarrow.fs as pafs

        if self._info(key).type == pafs.FileType.File:
            return  # content-addressed: already there
        parent = key.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(key) as out:  # one put: atomic on object stores
            out.write(data)

    def put_bytes(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        """Store ``data``; return ``(sha256 hex digest, URI)``."""
        digest = hashlib.sha256(data).hexdigest()
        key = self._key(digest, suffix)
        self._put(key, data)
        return digest, self.uri_for_key(key)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, str, int]:
        """Store a copy of the file at ``path``; return ``(digest, uri, size)``."""
        src, suffix = _source_file(path)
        data = src.read_bytes()
        digest, uri = self.put_bytes(data, suffix)
        return digest, uri, len(data)

    def put_table(self, table: pa.Table, *, canonical: bool = False) -> tuple[str, str]:
        """Store a table as Parquet under its canonical digest; return ``(digest, uri)``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        canon = table if canonical else canonical_table(table)
        digest = _ipc_digest(canon)
        sink = pa.BufferOutputStream()
        pq.write_table(canon, sink, compression="zstd")
        key = self._key(digest, TABLE_SUFFIX)
        self._put(key, sink.getvalue().to_pybytes())
        return digest, self.uri_for_key(key)

    # -- reading ---------------------------------------------------------
    def read_bytes(self, uri_or_digest: str) -> bytes:
        """The raw content of an artifact (the caller verifies it against a digest it knows)."""
        key = self._resolve_key(uri_or_digest)
        with self.fs.open_input_stream(key) as f:
            data: bytes = f.read()
        return data

    def get_bytes(self, uri_or_digest: str) -> bytes:
        """The content of an artifact, after checking it still matches its digest."""
        key = self._resolve_key(uri_or_digest)
        with self.fs.open_input_stream(key) as f:
            data: bytes = f.read()
        name = key.rsplit("/", 1)[1]
        if name.endswith(TABLE_SUFFIX):
            import pyarrow as pa
            import pyarrow.parquet as pq

            actual = table_digest(pq.read_table(pa.BufferReader(data)))
        else:
            actual = hashlib.sha256(data).hexdigest()
        _verify(Path(key), name[:64], actual)
        return data

    def read_table(self, uri_or_digest: str) -> pa.Table:
        """A stored table (from :meth:`put_table`), verified against its digest."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        key = self._resolve_key(uri_or_digest)
        name = key.rsplit("/", 1)[1]
        if not name.endswith(TABLE_SUFFIX):
            raise ArtifactPathError(
                f"{uri_or_digest} is not a table stored by put_table(); use get_bytes()")
        with self.fs.open_input_stream(key) as f:
            table = pq.read_table(pa.BufferReader(f.read()))
        _verify(Path(key), name[:64], table_digest(table))
        return table


def open_store(root: str | os.PathLike[str]) -> ArtifactStore:
    """The artifact store at ``root``: a local directory (or ``file://`` URI), or a remote URI.

    Examples
    --------
    >>> import tempfile
    >>> type(open_store(tempfile.mkdtemp())).__name__, type(open_store("memory://x")).__name__
    ('ArtifactStore', 'RemoteArtifactStore')
    """
    text = os.fspath(root)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file":
        return ArtifactStore(Path(urllib.request.url2pathname(parsed.path)))
    if parsed.scheme and "://" in text and len(parsed.scheme) > 1:  # not a Windows drive
        return RemoteArtifactStore(text)
    return ArtifactStore(Path(text))


def _blocks(f: BinaryIO) -> Iterator[bytes]:
    while block := f.read(_CHUNK):
        yield block


def _check_digest(digest: str) -> None:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ArtifactPathError(
            f"{digest!r} is not a sha256 digest; expected 64 lowercase hex digits"
        )


def _verify(path: Path, expected: str, actual: str) -> None:
    if actual != expected:
        raise ArtifactDigestMismatch(expected, actual, where=str(path))
