"""The TensorFlow training step: one `tf.function` (optionally XLA-compiled) over Keras variables.
TensorFlow is imported inside the functions: `models/distribute.py` imports this module always."""

from __future__ import annotations

import numpy as np

from models import optimizers, precision
from models.engine import common


class TensorFlowTrainStep(common.SparseStep):
    """Sparse-update step; the Keras variables are the training state. Without XLA, unique ids
    are exact (dynamic shapes cost nothing). With `jit_compile`, batches must be padded
    (`pads_unique`) so XLA compiles a handful of shapes, not one per batch.
    `models/distribute.py` reuses `gradients`, overrides `loss` and `step`."""

    def __init__(self, model, settings, loss_reduction, jit_compile, eval_batch_size):
        import tensorflow as tf

        super().__init__(model, settings, loss_reduction, eval_batch_size)
        self.pads_unique = jit_compile
        trainable = model.trainable_variables
        self.tables = [trainable[index].value for index in self.table_indices]
        self.dense = [trainable[index].value for index in self.dense_indices]
        state = self.state_tree = self.initial_state(
            lambda value: tf.Variable(value, trainable=False), trainable,
            model.non_trainable_variables, np.int64)
        self.slots, self.step_counter = state["slot"], state["step"]  # what the steps update
        self.rate, self.loss_scale, self.good_steps = (
            state["learning_rate"], state["loss_scale"], state["loss_scale_good_steps"])
        self._train = tf.function(self._train_step, jit_compile=jit_compile, reduce_retracing=True)
        self.predict_batch = tf.function(lambda ids: common.probabilities(model, ids),
                                         jit_compile=jit_compile, reduce_retracing=True)

    def step(self, batch) -> float:
        return float(self._train(batch.compact_ids, batch.unique_ids, batch.counts, batch.labels))

    def _train_step(self, compact_ids, unique_ids, counts, labels):
        import tensorflow as tf

        rows, gradients, data_loss = self.gradients(compact_ids, unique_ids, counts, labels)
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

    def gradients(self, compact_ids, unique_ids, counts, labels):
        """(float32 rows [U, D] per table, gradients of rows + dense weights, data loss);
        gradients are multiplied by the loss scale when there is one."""
        import tensorflow as tf

        rows = [tf.gather(table, unique_ids) for table in self.tables]
        with tf.GradientTape() as tape:
            tape.watch(rows)
            with common.compact_rows(self.layers, rows):
                logits = precision.float32_logits(self.model(compact_ids, training=True))
            loss, data_loss = self.loss(logits, labels, rows, counts)
            if self.loss_scale is not None:
                loss = loss * self.loss_scale
        gradients = tape.gradient(loss, rows + self.dense)
        return rows, [tf.convert_to_tensor(gradient) for gradient in gradients], data_loss

    def loss(self, logits, labels, rows, counts):
        """(loss to differentiate, data loss); the distributed step rescales them."""
        return common.batch_loss(logits, labels, rows, counts, self.layers, self.loss_reduction,
                                 [precision.float32_logits(loss) for loss in self.model.losses])

    def _apply_gradients(self, unique_ids, counts, rows, gradients):
        step = self.step_counter.assign_add(1)
        for index, table, table_rows, gradient in zip(self.table_indices, self.tables, rows,
                                                      gradients):
            update_rows(self.settings, table, table_rows, self.slots[index], unique_ids,
                        gradient, counts if self.pads_unique else None, self.rate)
        for index, variable, gradient in zip(self.dense_indices, self.dense,
                                             gradients[len(rows):]):
            update_dense(self.settings, variable, gradient, self.slots[index], step, self.rate)

    to_numpy = staticmethod(lambda variable: np.asarray(variable.numpy()))

    @staticmethod
    def load_leaf(variable, value):
        variable.assign(value)
        return variable

    def sync_model(self) -> None:
        """The Keras variables are the training state here; nothing to copy."""


def update_rows(settings, table, table_rows, slots: dict, unique_ids, gradient, counts,
                learning_rate):
    """Sparse update of `table` (a tf.Variable) at `unique_ids` and of its slot rows.

    Args:
        table_rows, gradient: [U, D], the current rows and their gradient.
        counts: [U] when unique ids are padded (see `common.updated_rows`), else None.
        learning_rate: the step's rate variable.
    """
    import tensorflow as tf

    slot_rows = {name: tf.gather(slot, unique_ids) for name, slot in slots.items()}
    new_rows, new_slot_rows = common.updated_rows(settings, table_rows, gradient, slot_rows,
                                                  counts, tf.convert_to_tensor(learning_rate))
    for variable, value in [(table, new_rows)] + [(slots[name], new_slot_rows[name])
                                                  for name in slots]:
        variable.scatter_update(tf.IndexedSlices(value, unique_ids))


def update_dense(settings, variable, gradient, slots: dict, step, learning_rate) -> None:
    """Dense update of a tf.Variable and its slot variables; `step` is the global step."""
    import tensorflow as tf

    value, new_slots = optimizers.apply(settings, variable, gradient, dict(slots), step,
                                        tf.convert_to_tensor(learning_rate))
    variable.assign(value)
    for name, slot_value in new_slots.items():
        slots[name].assign(slot_value)
