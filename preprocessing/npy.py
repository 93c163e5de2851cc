"""`.npy` files written by appending rows, for stage outputs too large for memory.

Appends rather than memmaps: the dirty pages of a written memmap count in the process's memory
(a full-size field file is 7 GB), appended pages only in the page cache. The row count is not
needed up front: the header, padded to a fixed size, is rewritten with it on close.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Self

import numpy as np

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
        self.dtype, self.row_shape, self.rows = np.dtype(dtype), tuple(row_shape), 0
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.handle.write(_header(self.dtype, self.row_shape, 0))
        self.unsynced, self.syncer = 0, None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.handle.name}: rows of shape {rows.shape[1:]}, expected "
                             f"{self.row_shape}")
        self.handle.write(rows.data)
        self.rows += len(rows)
        self.unsynced += rows.nbytes
        if self.unsynced >= SYNC_BYTES and not (self.syncer and self.syncer.is_alive()):
            self.handle.flush()
            self.unsynced = 0
            self.syncer = threading.Thread(target=os.fdatasync, args=(self.handle.fileno(),),
                                           daemon=True)
            self.syncer.start()

    def close(self) -> int:
        """Writes the final header and closes the file; returns the number of rows."""
        if self.syncer:
            self.syncer.join()
        self.handle.seek(0)
        self.handle.write(_header(self.dtype, self.row_shape, self.rows))
        self.handle.close()
        return self.rows

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
