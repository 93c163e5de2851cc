"""The training step with sparse row updates, TensorFlow version (JAX: `train_step_jax.py`).

Per batch (see `models/data.Batch`): gather `rows = table[unique_ids]` for every `SparseEmbedding`,
run the model on compact ids inside `compact_rows`, differentiate with respect to the rows and the
dense weights, then update only the touched rows and their optimiser slot rows
(`models/optimizers.py`). Model code is untouched: outside `compact_rows` it is a plain Keras model.

Both backends expose the same object: `step(batch) -> data loss`, `predict(ids) -> probabilities`,
`state()` / `load_state()` (weights, slots, step: what a checkpoint holds) and `sync_model()`.
"""

from __future__ import annotations

import ctypes
import os

import keras
import numpy as np
from keras import ops

from models import optimizers, precision
from models.layers.embedding import sparse_embeddings


def create_train_step(model: keras.Model, settings: optimizers.OptimizerSettings,
                      loss_reduction: str, jit_compile: bool, eval_batch_size: int):
    """The train step object for the active Keras backend (tensorflow or jax)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return TensorFlowTrainStep(model, settings, loss_reduction, jit_compile, eval_batch_size)
    if backend == "jax":
        from models.train_step_jax import JaxTrainStep

        return JaxTrainStep(model, settings, loss_reduction, eval_batch_size)
    raise ValueError(f"KERAS_BACKEND={backend!r}: the runner supports tensorflow and jax")


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


def keep_first_for_padding(new_values, counts):
    """Padded unique ids repeat unique_ids[0] (count 0): give them position 0's new value, so the
    scatter writes one value per id however duplicates are ordered."""
    return ops.where(ops.reshape(counts > 0, (-1,) + (1,) * (len(new_values.shape) - 1)),
                     new_values, new_values[:1])


def predict_in_batches(predict_fn, ids: np.ndarray, batch_size: int, fixed_shape: bool):
    """Probabilities float32 [N] for ids [N, F]; pads the last batch when shapes are compiled."""
    outputs = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        rows = len(chunk)
        if fixed_shape and rows < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - rows, axis=0)])
        outputs.append(np.asarray(predict_fn(chunk)).reshape(-1)[:rows])
    return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros(0, np.float32)


def split_variables(model: keras.Model):
    """(sparse layers, indices of their tables in trainable_variables, indices of dense weights)."""
    layers = sparse_embeddings(model)
    position = {id(variable): index for index, variable in enumerate(model.trainable_variables)}
    table_indices = [position[id(layer.embeddings)] for layer in layers]
    dense_indices = [index for index in range(len(model.trainable_variables))
                     if index not in set(table_indices)]
    return layers, table_indices, dense_indices


class TensorFlowTrainStep:
    """Sparse-update training step as one `tf.function` (optionally XLA-compiled).

    Without XLA, unique ids are exact (dynamic shapes cost nothing). With `jit_compile`, batches
    must be padded (`pads_unique`) so XLA compiles a handful of shapes, not one per batch.
    """
    make_batch = None  # data.epoch_batches' default batches (models/distribute.py shards them)

    def __init__(self, model, settings, loss_reduction, jit_compile, eval_batch_size):
        import tensorflow as tf

        self.model, self.settings, self.loss_reduction = model, settings, loss_reduction
        self.pads_unique = jit_compile
        self.eval_batch_size = eval_batch_size
        self.layers, self.table_indices, self.dense_indices = split_variables(model)
        trainable = model.trainable_variables
        self.tables = [trainable[index].value for index in self.table_indices]
        self.dense = [trainable[index].value for index in self.dense_indices]
        self.slots = {index: {name: tf.Variable(value, trainable=False) for name, value in
                              optimizers.initial_slots(settings, tuple(trainable[index].shape),
                                                       per_row=index in self.table_indices).items()}
                      for index in range(len(trainable))}
        self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.loss_scale = self.good_steps = None  # float16 only (models/precision.py)
        if precision.needs_loss_scale(model):
            self.loss_scale = tf.Variable(precision.INITIAL_LOSS_SCALE, trainable=False)
            self.good_steps = tf.Variable(0, dtype=tf.int32, trainable=False)
        self._train = tf.function(self._train_step, jit_compile=jit_compile, reduce_retracing=True)
        self._predict = tf.function(
            lambda ids: ops.sigmoid(precision.float32_logits(model(ids, training=False))),
            jit_compile=jit_compile, reduce_retracing=True)

    def step(self, batch) -> float:
        return float(self._train(batch.compact_ids, batch.unique_ids, batch.counts, batch.labels))

    def _train_step(self, compact_ids, unique_ids, counts, labels):
        import tensorflow as tf

        rows, gradients, data_loss = self._gradients(compact_ids, unique_ids, counts, labels)
        if self.loss_scale is None:
            self._apply_gradients(unique_ids, counts, rows, gradients)
            return data_loss
        gradients, finite = precision.unscale(gradients, self.loss_scale)

        def apply():
            self._apply_gradients(unique_ids, counts, rows, gradients)
            return tf.constant(True)

        # an overflowed float16 step changes nothing but the loss scale
        tf.cond(finite, apply, lambda: tf.constant(False))
        scale, good_steps = precision.next_loss_scale(self.loss_scale, self.good_steps, finite)
        self.loss_scale.assign(scale)
        self.good_steps.assign(good_steps)
        return data_loss

    def _gradients(self, compact_ids, unique_ids, counts, labels):
        """(float32 rows [U, D] per table, gradients of rows + dense weights, data loss);
        gradients are multiplied by the loss scale when there is one."""
        import tensorflow as tf

        from models.layers.embedding import compact_rows

        rows = [tf.gather(table, unique_ids) for table in self.tables]
        with tf.GradientTape() as tape:
            tape.watch(rows)
            with compact_rows(dict(zip(self.layers, precision.compute_rows(self.layers, rows)))):
                logits = precision.float32_logits(self.model(compact_ids, training=True))
            loss, data_loss = self._loss(logits, labels, rows, counts)
            if self.loss_scale is not None:
                loss = loss * self.loss_scale
        gradients = tape.gradient(loss, rows + self.dense)
        return rows, [tf.convert_to_tensor(gradient) for gradient in gradients], data_loss

    def _loss(self, logits, labels, rows, counts):
        """(loss to differentiate, data loss); the distributed step rescales them."""
        return batch_loss(logits, labels, rows, counts, self.layers, self.loss_reduction,
                          [precision.float32_logits(loss) for loss in self.model.losses])

    def _apply_gradients(self, unique_ids, counts, rows, gradients):
        step = self.step_counter.assign_add(1)
        for index, table, table_rows, gradient in zip(self.table_indices, self.tables, rows,
                                                      gradients):
            update_rows(self.settings, table, table_rows, self.slots[index], unique_ids,
                        gradient, counts if self.pads_unique else None)
        for index, variable, gradient in zip(self.dense_indices, self.dense,
                                             gradients[len(rows):]):
            update_dense(self.settings, variable, gradient, self.slots[index], step)

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return predict_in_batches(self._predict, ids, self.eval_batch_size, self.pads_unique)

    def state(self) -> dict[str, np.ndarray]:
        """Weights, optimiser slots and step as numpy arrays (the checkpoint layout)."""
        arrays = weight_arrays(self.model)
        for index, slots in self.slots.items():
            arrays.update({f"slot/{index}/{name}": slot.numpy() for name, slot in slots.items()})
        arrays["step"] = np.asarray(self.step_counter.numpy())
        if self.loss_scale is not None:
            arrays["loss_scale"] = np.asarray(self.loss_scale.numpy())
            arrays["loss_scale_good_steps"] = np.asarray(self.good_steps.numpy())
        return arrays

    def load_state(self, arrays: dict) -> None:
        load_weight_arrays(self.model, arrays)
        for index, slots in self.slots.items():
            for name, slot in slots.items():
                if f"slot/{index}/{name}" in arrays:  # absent when loading weights only
                    slot.assign(arrays[f"slot/{index}/{name}"])
        if "step" in arrays:
            self.step_counter.assign(int(arrays["step"]))
        if self.loss_scale is not None and "loss_scale" in arrays:
            self.loss_scale.assign(float(arrays["loss_scale"]))
            self.good_steps.assign(int(arrays["loss_scale_good_steps"]))

    def weights(self) -> dict[str, np.ndarray]:
        return weight_arrays(self.model)

    def sync_model(self) -> None:
        """The Keras variables are the training state here; nothing to copy."""


def update_rows(settings, table, table_rows, slots: dict, unique_ids, gradient, counts=None):
    """Sparse update of `table` (a tf.Variable) at `unique_ids` and of its slot rows.

    Args:
        table_rows, gradient: [U, D], the current rows and their gradient.
        counts: [U] when unique ids are padded (`keep_first_for_padding`), else None.
    """
    import tensorflow as tf

    slot_rows = {name: tf.gather(slot, unique_ids) for name, slot in slots.items()}
    new_rows, new_slot_rows = optimizers.apply(settings, table_rows, gradient, slot_rows)
    for variable, value in [(table, new_rows)] + [(slots[name], new_slot_rows[name])
                                                  for name in slots]:
        if counts is not None:
            value = keep_first_for_padding(value, counts)
        variable.scatter_update(tf.IndexedSlices(value, unique_ids))


def update_dense(settings, variable, gradient, slots: dict, step) -> None:
    """Dense update of a tf.Variable and its slot variables; `step` is the global step."""
    value, new_slots = optimizers.apply(settings, variable, gradient, dict(slots), step)
    variable.assign(value)
    for name, slot_value in new_slots.items():
        slots[name].assign(slot_value)


def weight_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    arrays = {f"trainable/{index}": np.asarray(variable.numpy())
              for index, variable in enumerate(model.trainable_variables)}
    arrays.update({f"non_trainable/{index}": np.asarray(variable.numpy())
                   for index, variable in enumerate(model.non_trainable_variables)})
    return arrays


def load_weight_arrays(model: keras.Model, arrays: dict) -> None:
    for prefix, variables in (("trainable", model.trainable_variables),
                              ("non_trainable", model.non_trainable_variables)):
        for index, variable in enumerate(variables):
            value = arrays[f"{prefix}/{index}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"checkpoint {prefix}/{index} ({variable.path}): shape "
                                 f"{value.shape}, model has {tuple(variable.shape)}")
            variable.assign(value)
