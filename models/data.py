"""Batches streamed from the memory-mapped field files (never a whole split in RAM).

Training order of one epoch: the split is cut into contiguous blocks of `block_rows` rows; the block
order is a seeded permutation, and each block is read in one contiguous slice and shuffled in
memory. The order depends only on (seed, epoch), so a run resumed at step s of an epoch sees exactly
the batches an uninterrupted run sees. A background thread prepares batches (read, shuffle, unique
ids) while the accelerator-free cores run the training step.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass
class Batch:
    """One training batch in compact form (see `models/layers/embedding.py`).

    compact_ids: int32 [B, F], positions into `unique_ids`.
    unique_ids: int32 [U], sorted global ids the batch touches, padded (see `compact_batch`).
    counts: float32 [U], occurrences of each unique id in the batch; 0 marks padding.
    labels: float32 [B].
    step: 1-based index of this batch within its epoch.
    """
    compact_ids: np.ndarray
    unique_ids: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    step: int

    @property
    def rows(self) -> int:
        return len(self.labels)


def padded_size(num_unique: int, limit: int) -> int:
    """`num_unique` rounded up to a ladder (2^k times 1, 1.25, 1.5, 1.75), capped at `limit`.

    Compiled steps (XLA, JAX) specialise on shapes; a ladder bounds the number of compilations to a
    handful while wasting at most 25% of the gathered rows.
    """
    if num_unique <= 256:
        return max(min(256, limit), num_unique)
    power = 1 << (num_unique.bit_length() - 1)
    size = next(power * quarters // 4 for quarters in (4, 5, 6, 7, 8)
                if power * quarters // 4 >= num_unique)
    return max(min(size, limit), num_unique)


def compact_batch(fields: np.ndarray, labels: np.ndarray, step: int,
                  pad_limit: int | None) -> Batch:
    """Global ids [B, F] -> compact ids and the sorted unique ids they index.

    With `pad_limit`, unique ids are padded to `padded_size` by repeating `unique_ids[0]` with count
    0; the training step writes position 0's new values to those duplicates, so the scatter is
    still well defined.
    """
    unique_ids, inverse, counts = np.unique(fields, return_inverse=True, return_counts=True)
    if pad_limit is not None:
        extra = padded_size(len(unique_ids), pad_limit) - len(unique_ids)
        unique_ids = np.concatenate([unique_ids, np.full(extra, unique_ids[0], unique_ids.dtype)])
        counts = np.concatenate([counts, np.zeros(extra, counts.dtype)])
    return Batch(compact_ids=inverse.reshape(fields.shape).astype(np.int32),
                 unique_ids=unique_ids.astype(np.int32), counts=counts.astype(np.float32),
                 labels=np.asarray(labels, np.float32), step=step)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def epoch_batches(fields: np.ndarray, labels: np.ndarray, batch_size: int, block_rows: int,
                  seed: int, epoch: int, start_step: int = 0,
                  pad_limit: int | None = None, make_batch=None,
                  negative_rate: float = 1.0) -> Iterator[Batch]:
    """Shuffled training batches of one epoch, starting after `start_step` batches.

    Args:
        fields: int32 [N, F] (a memmap); labels: uint8 [N]. Pass slices for max_train_rows.
        block_rows: rows read and shuffled together (the shuffle buffer).
        make_batch: (fields, labels, step) -> item yielded; `compact_batch` with `pad_limit` by
            default (`models/distribute.shard_batch` cuts batches per replica).
        negative_rate: keep each negative row with this probability, a new seeded draw per
            (epoch, block), so resuming still sees the batches of an uninterrupted run.
    The last batch of an epoch may be smaller than `batch_size`; no row is dropped.
    """
    if make_batch is None:
        def make_batch(batch_fields, batch_labels, step):
            return compact_batch(batch_fields, batch_labels, step, pad_limit)
    rows = len(fields)
    starts = np.arange(0, rows, block_rows)
    order = np.random.default_rng([seed, epoch]).permutation(len(starts))
    skip = start_step * batch_size
    step = start_step
    pending_fields, pending_labels = [], []
    pending = 0
    for block in order:
        start, stop = int(starts[block]), int(min(starts[block] + block_rows, rows))
        permutation = np.random.default_rng([seed, epoch, int(block)]).permutation(stop - start)
        block_labels = np.asarray(labels[start:stop])
        if negative_rate < 1.0:
            draws = np.random.default_rng([seed, epoch, int(block), 1]).random(stop - start)
            permutation = permutation[(block_labels[permutation] == 1)
                                      | (draws[permutation] < negative_rate)]
        if skip >= len(permutation):
            skip -= len(permutation)
            continue
        block_fields = np.asarray(fields[start:stop])
        position = skip
        skip = 0
        while position < len(permutation):
            take = permutation[position:position + batch_size - pending]
            position += len(take)
            pending_fields.append(block_fields[take])
            pending_labels.append(block_labels[take])
            pending += len(take)
            if pending == batch_size:
                step += 1
                yield make_batch(_join(pending_fields), _join(pending_labels), step)
                pending_fields, pending_labels, pending = [], [], 0
    if pending:
        yield make_batch(_join(pending_fields), _join(pending_labels), step + 1)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def eval_batches(fields: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Contiguous int32 [<=batch_size, F] slices in row order (prediction keeps row order)."""
    for start in range(0, len(fields), batch_size):
        yield np.asarray(fields[start:start + batch_size])


def prefetch(iterator: Iterator, depth: int) -> Iterator:
    """Runs `iterator` in a background thread, `depth` items ahead; re-raises its errors.

    Closing the returned generator (or dropping it) stops the thread at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                items.put(item)
            items.put(done)
        except BaseException as error:  # noqa: BLE001 (handed to the consumer, raised there)
            items.put(error)

    thread = threading.Thread(target=produce, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get(timeout=0.05)
            except queue.Empty:
                pass
