"""One process at a time per run dir: an exclusive lock file with the holder's pid and host.

``train`` and ``resume`` hold ``RUN_DIR/run.lock`` while they write the run dir. The lock is an
``fcntl.flock`` on that file, so the operating system releases it when the process ends in
any way, ``SIGKILL`` included; the file itself (JSON ``{"pid", "host", "started"}``) names the
holder for the error message of a second process and is removed on a normal release. A lock
file whose lock nobody holds was left by a process that died: the next process takes it over
and says so.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with RunDirLock(d) as lock:
    ...         try:
    ...             RunDirLock(d).acquire()
    ...         except RunDirLockedError as e:
    ...             print("refused:", "in use by pid" in str(e))
    ...     print((Path(d) / LOCK_FILE).exists())
    refused: True
    False
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunDirLock", "RunDirLockedError", "read_lock_holder", "describe_holder"]

#: The lock file's name inside a run dir.
LOCK_FILE = "run.lock"


class RunDirLockedError(RuntimeError):
    """Another live process holds the run dir's lock; the message names it (pid, host).

    Example:
        >>> issubclass(RunDirLockedError, RuntimeError)
        True
    """


def read_lock_holder(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``{"pid", "host", "started"}`` recorded in a lock file, or ``None`` if it has none
    (missing, empty, being written, or not ours).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d) / LOCK_FILE
        ...     _ = p.write_text('{"pid": 12, "host": "h", "started": 0}')
        ...     read_lock_holder(p)["pid"], read_lock_holder(Path(d) / "none")
        (12, None)
    """
    try:
        raw = Path(path).read_bytes()[:4096]
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    pid, host = str(holder.get("pid", "?"))[:20], str(holder.get("host", "?"))[:100]
    started = holder.get("started")
    since = ""
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        since = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(min(max(started, 0), 2**40)))}"
    return f"pid {pid} on host {host}{since}"


class RunDirLock:
    """The exclusive lock of one run dir (``run_dir/run.lock``); a context manager.

    Args:
        run_dir: an existing directory.

    Attributes:
        path: the lock file.
        took_over: the previous holder (a dict, see :func:`read_lock_holder`) when
            :meth:`acquire` found a lock file left by a process that is gone, else ``None``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     lock = RunDirLock(d)
        ...     lock.acquire()
        ...     held = read_lock_holder(lock.path)["pid"] == os.getpid()
        ...     lock.release()
        ...     held, lock.path.exists()
        (True, False)
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / LOCK_FILE
        self.took_over: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise.

        Raises:
            RunDirLockedError: a live process holds it (the message names its pid and host).
            OSError: the lock file cannot be created (a read-only or missing run dir).
        """
        import fcntl

        if self._fd is not None:
            raise RuntimeError(f"RunDirLock({str(self.path.parent)!r}) is already held by this object")
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirLockedError(
                    f"run dir '{self.path.parent}' is in use by {_describe(read_lock_holder(self.path))} "
                    f"(lock file {self.path}); wait for that process to end or stop it, then try again"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The file may have been removed (released) between our open and our flock: then
            # we hold a lock on an unlinked file, and must retry on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                previous = os.read(fd, 4096)
                if previous.strip():
                    self.took_over = read_lock_holder(self.path) or {}
                record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, record.encode("utf-8") + b"\n", 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise RunDirLockedError(f"run dir '{self.path.parent}': the lock file {self.path} keeps changing; "
                                "another process is starting on it")

    def release(self) -> None:
        """Remove the lock file and release the lock (a no-op if not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass  # already gone (the user removed it): nothing to clean up
        finally:
            os.close(fd)  # releases the flock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``"pid N on host H since ..."`` for a holder record (``"another process"`` without one).

    Example:
        >>> describe_holder({"pid": 7, "host": "box"})
        'pid 7 on host box'
    """
    return _describe(holder)
