"""What every archive format shares: the Archive interface, Cancelled, reading sample data.

As MediaMTX's playback muxer interface: one Archive per /get answer, one subclass per format.
"""

from __future__ import annotations

import os
from pathlib import Path

from vms.mediaserver.mp4read import SegmentError

# Bytes handed out per read: the chunk the handler writes while the next one is made.
CHUNK = 1024 * 1024


class Cancelled(Exception):
    """The client went away; the work stopped."""


class Archive:
    """The bytes of one /get answer, produced a chunk at a time."""

    content_length: int | None = None

    def read(self) -> bytes:
        """The next chunk; b"" at the end. Blocking."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files."""


class SampleReader:
    """Reads sample data from segment files, keeping the current one open."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._fd = -1

    def read(self, path: Path, offset: int, size: int) -> bytes:
        """`size` bytes of `path` at `offset`; SegmentError if the file got shorter."""
        if path != self._path:
            self.close()
            self._fd = os.open(path, os.O_RDONLY)
            self._path = path
        data = os.pread(self._fd, size, offset)
        while len(data) < size:
            more = os.pread(self._fd, size - len(data), offset + len(data))
            if not more:
                raise SegmentError(f"{path.name} shrank while being read")
            data += more
        return data

    def close(self) -> None:
        """Close the open file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._path = None
