"""The file-system calls the storage layer makes, behind one small seam.

Theory of operation
-------------------
The write-ahead log and the snapshot store never call ``os`` for a file operation that can fail because of the
disk; they call a :class:`FileIO`. The default instance forwards straight to ``os`` (one extra Python call per
batch, not per entry). Tests substitute a subclass that fails writes with ``ENOSPC`` after a byte budget, fails
an fsync with ``EIO``, or writes short, so that disk-full and I/O-error handling is exercised deterministically.

Rules the callers rely on:

* :meth:`pwrite_all` either writes every byte or raises; when it raises, a prefix of the bytes may have reached
  the file (exactly what a real ``ENOSPC`` does).
* :meth:`fsync_dir` makes a file creation, rename or unlink in that directory durable; it is called after each.
"""

from __future__ import annotations

import contextlib
import os


class FileIO:
    """Forwards to ``os``. Subclass and override to inject faults (see ``tests/storage``)."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def pwrite_all(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset``, looping over short writes; raises ``OSError`` on failure."""
        done = self.pwrite(fd, data, offset)
        total = len(data)
        if done == total:  # the usual case, in one call
            return
        view = memoryview(data)
        while done < total:
            n = self.pwrite(fd, view[done:], offset + done)
            if n <= 0:  # a regular file never returns 0 for a non-empty write; treat it as "disk full"
                raise OSError(28, os.strerror(28))
            done += n

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fstat_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        """fsync a directory so that entries created, renamed or removed in it survive a crash."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def makedirs(self, path: str) -> None:
        """Create ``path`` (and parents) and make each new entry durable in its parent."""
        missing: list[str] = []
        cur = os.path.abspath(path)
        while not os.path.isdir(cur):
            missing.append(cur)
            parent = os.path.dirname(cur)
            if parent == cur:
                break
            cur = parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d)
            self.fsync_dir(os.path.dirname(d))


OS_IO = FileIO()
"""The default, fault-free file layer."""
