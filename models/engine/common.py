"""Backend-neutral parts of the training engine, shared by `tf_step.py` and `jax_step.py`."""

from __future__ import annotations

import contextlib
import ctypes
import os

import keras
import numpy as np
from keras import ops

from models import optimizers, precision
from models.layers.embedding import sparse_embeddings

WEIGHTS = ("trainable/", "non_trainable/")  # checkpoint names of model weights


def tune_memory_allocator() -> None:
    """Keeps the memory of per-step temporaries instead of returning it to the OS every step.

    Pairwise models allocate and free tensors of tens to hundreds of MB per step ([P, B, k] pair
    gathers: 118 MB for KFM-vec at the paper config). With glibc's defaults each is a fresh mmap
    whose pages fault in again on every step; KFM-vec and NIFM spent 30-50% of their CPU time in
    the kernel, and KFM-vec at the paper config ran 2-4x slower than with pooled memory.
    - TensorFlow: its pooling (BFC) CPU allocator; takes effect only if no TensorFlow tensor has
      been allocated yet in this process (true when called first thing in a run).
    - glibc (numpy, JAX): blocks up to 32 MB from the heap, trim only above 1 GB.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim_threshold, top_pad, mmap_threshold = -1, -2, -3  # glibc's M_* option numbers
    libc.mallopt(mmap_threshold, 32 << 20)  # glibc's maximum
    libc.mallopt(trim_threshold, 1 << 30)
    libc.mallopt(top_pad, 64 << 20)


def probabilities(model: keras.Model, ids):
    """Click probabilities of int ids [B, F] (float32 logits under any precision policy)."""
    return ops.sigmoid(precision.float32_logits(model(ids, training=False)))


def predict_in_batches(predict_batch, ids: np.ndarray, batch_size: int, pad: bool) -> np.ndarray:
    """Probabilities float32 [N] for ids [N, F], `batch_size` rows a call; `pad` repeats a row
    to fill a short last batch (compiled shapes). Also what `./run.sh predict` scores with, so
    its predictions equal the runner's bit for bit."""
    outputs = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        rows = len(chunk)
        if pad and rows < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - rows, axis=0)])
        outputs.append(np.asarray(predict_batch(chunk)).reshape(-1)[:rows])
    return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros(0, np.float32)


class SparseStep:
    """What the TensorFlow and JAX steps share: which tables get sparse updates, the training
    state `state_tree` (`initial_state`: tf.Variables for TensorFlow, arrays for JAX) and its
    checkpoints, and batched prediction. The learning rate is state, not a constant of the
    compiled step: `learning_rate = value` changes it between steps without a recompile, and a
    checkpoint keeps it.

    A subclass sets `pads_unique` (whether unique ids are padded) and `state_tree`, and defines
    `predict_batch(ids) -> probabilities`, `to_numpy(leaf)` and `load_leaf(leaf, array)`.
    """
    make_batch = None  # data.epoch_batches' default batches (models/distribute.py shards them)

    def __init__(self, model, settings, loss_reduction: str, eval_batch_size: int):
        self.model, self.settings, self.loss_reduction = model, settings, loss_reduction
        self.eval_batch_size = eval_batch_size
        self.layers = sparse_embeddings(model)  # each has a table updated by rows
        position = {id(variable): index for index, variable in enumerate(model.trainable_variables)}
        self.table_indices = [position[id(layer.embeddings)] for layer in self.layers]
        self.dense_indices = [index for index in range(len(model.trainable_variables))
                              if index not in self.table_indices]

    def initial_state(self, leaf, trainable: list, non_trainable: list, step_dtype) -> dict:
        """`state_tree` at the start: the model's variables as given, then, each made by
        `leaf(numpy value)`, the zeroed optimiser slots of every trainable variable (per-row ones
        for the tables), the step, the learning rate and, under float16 only (else None), the
        loss scale and its count of good steps (models/precision.py)."""
        slots = [optimizers.initial_slots(self.settings, tuple(variable.shape),
                                          per_row=index in self.table_indices)
                 for index, variable in enumerate(self.model.trainable_variables)]
        state = {"trainable": trainable, "non_trainable": non_trainable,
                 "slot": [{name: leaf(value) for name, value in slot.items()} for slot in slots],
                 "step": leaf(np.zeros((), step_dtype)),
                 "learning_rate": leaf(np.float32(self.settings.learning_rate)),
                 "loss_scale": None, "loss_scale_good_steps": None}
        if precision.needs_loss_scale(self.model):
            state["loss_scale"] = leaf(np.float32(precision.INITIAL_LOSS_SCALE))
            state["loss_scale_good_steps"] = leaf(np.zeros((), np.int32))
        return state

    @property
    def learning_rate(self) -> float:
        """The rate the next steps use (starts at `settings.learning_rate`)."""
        return float(self.to_numpy(self.state_tree["learning_rate"]))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        leaf = self.load_leaf(self.state_tree["learning_rate"], np.asarray(value, np.float32))
        self.state_tree = {**self.state_tree, "learning_rate": leaf}

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return predict_in_batches(self.predict_batch, ids, self.eval_batch_size, self.pads_unique)

    def state(self) -> dict[str, np.ndarray]:
        """Weights, optimiser slots, step and loss scale as numpy arrays (a checkpoint)."""
        return {name: self.to_numpy(leaf) for name, leaf in self.named_leaves()
                if leaf is not None}

    def weights(self) -> dict[str, np.ndarray]:
        return {name: self.to_numpy(leaf) for name, leaf in self.named_leaves()
                if name.startswith(WEIGHTS)}

    def load_state(self, arrays: dict) -> None:
        """From `state()` or `weights()` arrays (then slots, step and loss scale stay)."""
        def load(name, leaf):
            if leaf is None or name not in arrays and not name.startswith(WEIGHTS):
                return leaf
            if tuple(arrays[name].shape) != tuple(leaf.shape):
                raise ValueError(f"checkpoint {name}: shape {arrays[name].shape}, model has "
                                 f"{tuple(leaf.shape)}")
            return self.load_leaf(leaf, arrays[name])

        self.state_tree = keras.tree.pack_sequence_as(
            self.state_tree, [load(name, leaf) for name, leaf in self.named_leaves()])

    def named_leaves(self) -> list:
        """(checkpoint name, leaf) of `state_tree`: trainable/0, ..., slot/0/m, ..., step."""
        return [("/".join(map(str, path)), leaf)
                for path, leaf in keras.tree.flatten_with_path(self.state_tree)]


@contextlib.contextmanager
def compact_rows(layers, rows):
    """Within this context `layers[i]` looks up compact ids in `rows[i]` (float32 [U, D], the
    rows `table[unique_ids]`), cast to the layer's compute dtype: the sparse-update hook
    `SparseEmbedding.batch_rows`, set here and cleared on exit. One forward pass of a model at a
    time (tf.distribute's replica threads take turns: the forward pass has no merge_call)."""
    for layer, layer_rows in zip(layers, precision.compute_rows(layers, rows)):
        layer.batch_rows = layer_rows
    try:
        yield
    finally:
        for layer in layers:
            layer.batch_rows = None


def batch_loss(logits, labels, rows, counts, layers, reduction: str, extra_losses):
    """(loss to differentiate, data loss) of one batch.

    Sparse L2 follows the authors (tf_models.py): l2 * 1/2 * ||row||^2 summed over every lookup
    of the batch (counts = lookups per unique row), whatever the data-loss reduction.

    Args:
        logits: [B, 1]; labels: [B]; rows: one [U, D] tensor per layer; counts: [U].
    """
    cross_entropy = ops.binary_crossentropy(ops.reshape(labels, (-1, 1)), logits, from_logits=True)
    data_loss = ops.sum(cross_entropy) if reduction == "sum" else ops.mean(cross_entropy)
    loss = data_loss
    for layer, layer_rows in zip(layers, rows):
        if layer.sparse_l2:
            loss = loss + 0.5 * layer.sparse_l2 * ops.sum(counts[:, None] * ops.square(layer_rows))
    for extra in extra_losses:
        loss = loss + extra
    return loss, data_loss


def updated_rows(settings, rows, gradient, slot_rows: dict, counts=None, learning_rate=None):
    """(new rows, new slot rows) of one table from rows, gradient [U, D] and the slot rows, at
    `learning_rate` (see `optimizers.apply`).

    `counts` [U] when unique ids are padded (repeats of unique_ids[0] with count 0): padding
    positions get position 0's new values, so a scatter at unique_ids writes one value per id
    however duplicates are ordered. None for exact unique ids."""
    new_rows, new_slot_rows = optimizers.apply(settings, rows, gradient, slot_rows,
                                               learning_rate=learning_rate)
    if counts is None:
        return new_rows, new_slot_rows

    def keep_first(values):
        keep = ops.reshape(counts > 0, (-1,) + (1,) * (len(values.shape) - 1))
        return ops.where(keep, values, values[:1])

    return keep_first(new_rows), {name: keep_first(value) for name, value in new_slot_rows.items()}
