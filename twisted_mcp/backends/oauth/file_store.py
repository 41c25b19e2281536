"""
The file store (C{docs/design/oauth.md} §6.5): token and client records as
sealed files under a directory only the gateway's user may enter; started
authorizations (C{pending}) and leases in memory.

Layout::

    <path>/tokens/<h>.json     {"version": n, "record": <envelope>}
    <path>/clients/<h>.json
    <path>/catalog/<backend>.json   the backend's last listing, plain JSON

C{<h>} is the hex SHA-256 of the record key's canonical JSON: no user names
in file names. Files are read synchronously the first time a record is asked
for (a few KiB each); writes go through an injected runner (a worker thread
by default) as a temporary file, C{fsync}, C{rename}, C{fsync} of the
directory, serialised per record, with the in-memory copy authoritative
while a write is in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.oauth.sealing import canonical_key
from twisted_mcp.backends.oauth.store import Key, Kind, MemoryStore, Slot, StoreUnusable

log = Logger()

#: The subdirectory of each kind kept on disk.
DIRECTORIES: dict[str, str] = {"token": "tokens", "client": "clients"}
CATALOG_DIRECTORY = "catalog"
#: A record file larger than this is not read.
MAX_FILE_BYTES = 1 << 20

_RECORD_NAME = re.compile(r"\A[0-9a-f]{64}\.json\Z")
_TEMPORARY_MARK = ".tmp-"


def _default_runner(job: Callable[[], None]) -> Deferred[None]:
    from twisted.internet.threads import deferToThread

    return deferToThread(job)


def record_name(key: Key) -> str:
    """The file name of a record: the hex SHA-256 of its key's canonical JSON, then C{.json}."""
    return hashlib.sha256(canonical_key(key)).hexdigest() + ".json"


def _loose(mode: int, uid: int, expected_uid: int) -> bool:
    return bool(mode & 0o077) or uid != expected_uid


def write_atomically(path: str, content: bytes) -> None:
    """
    Replace C{path} with C{content}: a new 0600 file beside it, C{fsync},
    C{rename} over C{path}, C{fsync} of the directory. A crash leaves the old
    file or the new one, never a torn one.
    """
    directory = os.path.dirname(path)
    temporary = f"{path}{_TEMPORARY_MARK}{os.urandom(6).hex()}"
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: str, stamp: int) -> str | None:
    """
    Rename C{path} to C{<path>.bad-<stamp>} (a free name: C{.1}, C{.2}...
    appended if taken), kept for inspection; the new name, or C{None} if
    there was no file.
    """
    aside = f"{path}.bad-{stamp}"
    suffix = 0
    while os.path.lexists(aside):
        suffix += 1
        aside = f"{path}.bad-{stamp}.{suffix}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_directory(os.path.dirname(path))


class FileStore(MemoryStore):
    """
    L{RecordStore<twisted_mcp.backends.oauth.store.RecordStore>} with
    C{token} and C{client} records on disk and C{pending} ones in memory.
    Call L{check} at start.
    """

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        write: Callable[[Callable[[], None]], Deferred[None]] | None = None,
    ) -> None:
        """
        @param path: the store's directory (created 0700 by L{check} if absent).
        @param clock: for leases, pending expiry and the names of set-aside files.
        @param write: runs one blocking write and fires when it is done
            (default: C{deferToThread}); tests pass a synchronous one.
        """
        super().__init__(clock)
        self.path = os.path.abspath(path)
        self._write: Callable[[Callable[[], None]], Deferred[None]] = write or _default_runner
        self._uid = os.getuid()
        # Writes waiting, per file: each runs when the one before it is done.
        self._queues: dict[str, list[tuple[Callable[[], None], Deferred[None]]]] = {}
        self._catalogs: dict[str, dict[str, Any]] = {}
        # Record files found unreadable while listing, not read again.
        self._skipped: set[str] = set()

    # ------------------------------------------------------------ directory

    def check(self) -> None:
        """
        Create the store's directories (0700) if absent, verify that each is
        ours and closed to group and others, and clear temporary files a
        crash left behind.

        @raise StoreUnusable: a directory is open to others or owned by
            another user; the message says which and how to fix it.
        """
        for directory in [self.path, *(self._directory(name) for name in (*DIRECTORIES.values(), CATALOG_DIRECTORY))]:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                status = os.stat(directory)
            except OSError as e:
                raise StoreUnusable(f"token store {directory} cannot be used: {e.strerror}") from None
            if not stat.S_ISDIR(status.st_mode):
                raise StoreUnusable(f"token store {directory} is not a directory")
            mode = stat.S_IMODE(status.st_mode)
            if _loose(mode, status.st_uid, self._uid):
                fix = f"chmod 700 {directory}"
                if status.st_uid != self._uid:
                    fix = f"chown {self._uid} {directory}; {fix}"
                raise StoreUnusable(
                    f"token store {directory} is mode {mode:04o}"
                    + (f" and owned by uid {status.st_uid}" if status.st_uid != self._uid else "")
                    + f": it must be 0700 and owned by uid {self._uid} ({fix})"
                )
        for name in (*DIRECTORIES.values(), CATALOG_DIRECTORY):
            directory = self._directory(name)
            for entry in os.listdir(directory):
                if _TEMPORARY_MARK in entry:
                    try:
                        os.unlink(os.path.join(directory, entry))
                    except OSError:
                        pass

    def _directory(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _file(self, kind: Kind, key: Key) -> str:
        return os.path.join(self._directory(DIRECTORIES[kind]), record_name(key))

    # ------------------------------------------------------------ reading

    def _read(self, path: str) -> bytes | None:
        """
        The bytes of C{path}, or C{None} if absent.

        @raise PermissionError: the file is open to others or not ours (logged).
        @raise OSError: it cannot be read.
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        try:
            status = os.fstat(fd)
            mode = stat.S_IMODE(status.st_mode)
            if not stat.S_ISREG(status.st_mode) or _loose(mode, status.st_uid, self._uid):
                log.error(
                    "token store file {path} is mode {mode} owned by uid {uid}: ignored (it must be 0600 and "
                    "owned by uid {expected}); the principal must authorize again",
                    path=path,
                    mode=f"{mode:04o}",
                    uid=status.st_uid,
                    expected=self._uid,
                )
                raise PermissionError(f"{path} is not private to uid {self._uid}")
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_BYTES:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise OSError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _load(self, kind: Kind, key: Key) -> Slot:
        if kind not in DIRECTORIES:
            return super()._load(kind, key)
        path = self._file(kind, key)
        try:
            content = self._read(path)
        except PermissionError as e:
            return Slot(None, 0, problem=("permissions", str(e)))
        except OSError as e:
            log.error("token store file {path} cannot be read: {problem}", path=path, problem=e.strerror or str(e))
            return Slot(None, 0, problem=("io", f"{path} cannot be read"))
        if content is None:
            return Slot(None, 0)
        parsed = self._parse(content)
        if parsed is None:
            self._log_set_aside(path, _set_aside(path, int(self.clock.seconds())))
            return Slot(None, 0, problem=("tampered", f"{path} is malformed"))
        return parsed

    @staticmethod
    def _parse(content: bytes) -> Slot | None:
        """The slot a record file holds, or C{None} if it is not one this store wrote."""
        try:
            obj = json.loads(content)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        version = obj.get("version")
        record = obj.get("record")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1 or not isinstance(record, dict):
            return None
        sealed = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        return Slot(sealed, version)

    def _discover(self, kind: Kind) -> Iterable[Key]:
        """Load every record file of C{kind} not yet in memory."""
        if kind not in DIRECTORIES:
            return ()
        directory = self._directory(DIRECTORIES[kind])
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return ()
        known = {record_name(key) for (slot_kind, key) in self._slots if slot_kind == kind}
        found: list[Key] = []
        for name in sorted(names):
            path = os.path.join(directory, name)
            if not _RECORD_NAME.match(name) or name in known or path in self._skipped:
                continue
            key = self._key_in(path)
            if key is not None and record_name(key) == name:
                self._slot(kind, key)
                found.append(key)
            else:
                self._skipped.add(path)
        return found

    def _key_in(self, path: str) -> Key | None:
        """The key a record file names in its envelope, if it is readable and names one."""
        try:
            content = self._read(path)
        except OSError:
            return None
        if content is None:
            return None
        try:
            obj = json.loads(content)
            key = obj["record"]["k"]
        except (ValueError, RecursionError, TypeError, KeyError):
            return None
        if not isinstance(key, list) or not all(isinstance(part, str) for part in key):
            return None
        return tuple(key)

    # ------------------------------------------------------------ writing

    def _persist(self, kind: Kind, key: Key, slot: Slot) -> Deferred[None]:
        if kind not in DIRECTORIES:
            return super()._persist(kind, key, slot)
        path = self._file(kind, key)
        if slot.sealed is None:
            return self._enqueue(path, lambda: _remove(path))
        content = json.dumps(
            {"version": slot.version, "record": json.loads(slot.sealed)}, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
        return self._enqueue(path, lambda: write_atomically(path, content))

    def _enqueue(self, path: str, job: Callable[[], None]) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        queue = self._queues.setdefault(path, [])
        queue.append((job, done))
        if len(queue) == 1:
            self._run_next(path)
        return done

    def _run_next(self, path: str) -> None:
        queue = self._queues[path]
        job, done = queue[0]
        try:
            running = self._write(job)
        except Exception as e:  # a runner that raises instead of failing its Deferred
            running = fail(e)

        def finished(result: object) -> None:
            queue.pop(0)
            if queue:
                self._run_next(path)
            else:
                del self._queues[path]
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(None)

        running.addBoth(finished)

    def set_aside(self, kind: Kind, key: Key, version: int) -> Deferred[None]:
        """
        Move a record that failed to open to C{<h>.json.bad-<time>}, kept for
        inspection; the slot is empty from now on.
        """
        key = tuple(key)
        if kind not in DIRECTORIES:
            return super().set_aside(kind, key, version)
        slot = self._slot(kind, key)
        if slot.sealed is None or slot.version != version:
            return succeed(None)
        self._slots[(kind, key)] = Slot(None, slot.version)
        path = self._file(kind, key)
        stamp = int(self.clock.seconds())
        moved: list[str | None] = []
        return self._enqueue(path, lambda: moved.append(_set_aside(path, stamp))).addCallback(
            lambda _: self._log_set_aside(path, moved[0])
        )

    @staticmethod
    def _log_set_aside(path: str, aside: str | None) -> None:
        if aside is not None:
            log.error("token store file {path} set aside as {aside}", path=path, aside=os.path.basename(aside))

    # ------------------------------------------------------------ catalog

    def _catalog_file(self, backend: str) -> str:
        if not backend or backend in (".", "..") or "/" in backend or "\\" in backend or "\0" in backend:
            raise ValueError(f"not a backend name usable as a file name: {backend!r}")
        return os.path.join(self._directory(CATALOG_DIRECTORY), f"{backend}.json")

    def save_catalog(self, backend: str, listing: dict[str, Any]) -> None:
        """
        Keep C{backend}'s last listing (not secret: plain JSON), written in the
        background; L{load_catalog} returns it at once.

        @raise ValueError: C{backend} holds a path separator, or C{listing} is
            not JSON-able.
        """
        path = self._catalog_file(backend)
        content = json.dumps(listing, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._catalogs[backend] = json.loads(content)

        def failed(failure: Any) -> None:
            log.failure("the catalog of {backend} could not be written", failure, backend=backend)

        self._enqueue(path, lambda: write_atomically(path, content)).addErrback(failed)

    def load_catalog(self, backend: str) -> dict[str, Any] | None:
        """C{backend}'s last listing (saved in this process, else from its file), or C{None}."""
        if backend in self._catalogs:
            return self._catalogs[backend]
        path = self._catalog_file(backend)
        try:
            content = self._read(path)
        except OSError as e:
            log.error("catalog file {path} cannot be read: {problem}", path=path, problem=e.strerror or str(e))
            return None
        if content is None:
            return None
        try:
            listing = json.loads(content)
        except (ValueError, RecursionError):
            listing = None
        if not isinstance(listing, dict):
            log.error("catalog file {path} is not a JSON object: ignored", path=path)
            return None
        self._catalogs[backend] = listing
        return listing


__all__ = ["CATALOG_DIRECTORY", "DIRECTORIES", "FileStore", "MAX_FILE_BYTES", "record_name", "write_atomically"]
