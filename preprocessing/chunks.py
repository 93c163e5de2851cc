"""Streaming a row matrix to xgboost chunk by chunk: stage 04's leaf trees (`leaves.py`) and stage
05's GBDT learner (`models/gbdt.py`) read their memmapped matrices this way, never whole."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

CHUNK_ROWS = 1 << 18


class ChunkIterator(xgb.DataIter):
    """Feeds xgboost a memmapped matrix chunk by chunk, optionally only the rows of a mask.

    Args:
        matrix: float32 [rows, columns] (memmap); labels: [rows] or None.
        keep: bool [rows] or None (all rows).
        batch_info: passed with every batch (xgboost takes feature_names/feature_types there).
    """

    def __init__(self, matrix, labels=None, keep=None, chunk_rows: int = CHUNK_ROWS,
                 **batch_info):
        self.matrix, self.labels, self.keep, self.chunk_rows = matrix, labels, keep, chunk_rows
        self.batch_info = batch_info
        self.position = 0
        super().__init__()

    def next(self, input_data) -> bool:
        if self.position >= len(self.matrix):
            return False
        stop = self.position + self.chunk_rows
        rows = slice(self.position, stop)
        data = np.asarray(self.matrix[rows])
        labels = None if self.labels is None else np.asarray(self.labels[rows], np.float32)
        if self.keep is not None:
            keep = np.asarray(self.keep[rows])
            data = data[keep]
            labels = None if labels is None else labels[keep]
        self.position = stop
        input_data(data=data, label=labels, **self.batch_info)
        return True

    def reset(self) -> None:
        self.position = 0
