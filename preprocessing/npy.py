"""`.npy` files written by appending rows, for stage outputs too large for memory.

Appends rather than memmaps: the dirty pages of a written memmap count in the process's memory
(a full-size field file is 7 GB), appended pages only in the page cache. The row count is not
needed up front: the header, padded to a fixed size, is rewritten with it on close. A full disk
(also one the background sync finds) is a PipelineError naming the file and the free space.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Self

import numpy as np

from pipeline.errors import writing

_HEADER_BYTES = 128


def _header(dtype: np.dtype, row_shape: tuple, rows: int) -> bytes:
    """A .npy 1.0 header padded to _HEADER_BYTES, whatever the row count."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (rows, *row_shape)})
    body = text.encode("latin1").ljust(_HEADER_BYTES - 10 - 1) + b"\n"
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(body)) + body


# Written bytes after which the file is synced to disk in a background thread: the stage's
# publish fsyncs every output, and 2.4 GB left to that took 2-4 s of a 20 s stage 03.
SYNC_BYTES = 256 << 20


class NpyWriter:
    """Appends rows of shape `row_shape` to the .npy file at `path`; `close()` seals it."""

    def __init__(self, path: Path, dtype, row_shape: tuple = ()):
        self.path = Path(path)
        self.dtype, self.row_shape, self.rows = np.dtype(dtype), tuple(row_shape), 0
        with writing(self.path):
            self.handle = open(path, "wb")  # noqa: SIM115 (closed by close())
            self.handle.write(_header(self.dtype, self.row_shape, 0))
        self.unsynced, self.syncer, self.sync_error = 0, None, None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.handle.name}: rows of shape {rows.shape[1:]}, expected "
                             f"{self.row_shape}")
        with writing(self.path):
            self._raise_sync_error()
            self.handle.write(rows.data)
            self.rows += len(rows)
            self.unsynced += rows.nbytes
            if self.unsynced >= SYNC_BYTES and not (self.syncer and self.syncer.is_alive()):
                self.handle.flush()
                self.unsynced = 0
                self.syncer = threading.Thread(target=self._sync, daemon=True)
                self.syncer.start()

    def _sync(self) -> None:
        """fdatasync in the background thread; an error (ENOSPC found at writeback) is kept for
        the writing thread, which raises it at the next append or close."""
        try:
            os.fdatasync(self.handle.fileno())
        except OSError as error:
            self.sync_error = error

    def _raise_sync_error(self) -> None:
        if self.syncer:
            if not self.syncer.is_alive():
                self.syncer = None
            error, self.sync_error = self.sync_error, None
            if error is not None:
                raise error

    def close(self) -> int:
        """Writes the final header and closes the file; returns the number of rows."""
        try:
            with writing(self.path):
                if self.syncer:
                    self.syncer.join()
                    self._raise_sync_error()
                self.handle.seek(0)
                self.handle.write(_header(self.dtype, self.row_shape, self.rows))
                self.handle.close()
        finally:
            if not self.handle.closed:
                _close_quietly(self.handle)
        return self.rows

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _close_quietly(handle) -> None:
    """Closes `handle` after an error; its buffered bytes (whose flush fails again) are dropped."""
    try:
        handle.close()
    except OSError:
        pass
