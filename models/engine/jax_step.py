"""The JAX training step: a pure jitted function `state -> state` over a pytree held here.

JAX arrays are immutable, so training state (weights, slots, step, learning rate) lives in
`state_tree`, the model runs in a `keras.StatelessScope`, and tables are updated with
`.at[unique_ids].set(...)` on a donated buffer (in place after compilation). Batches are always
padded (`pads_unique`), so jit compiles a few shapes. The Keras variables are stale during
training; `sync_model()` updates them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops

from models import optimizers, precision
from models.engine import common


class JaxTrainStep(common.SparseStep):
    pads_unique = True

    def __init__(self, model, settings, loss_reduction, eval_batch_size):
        super().__init__(model, settings, loss_reduction, eval_batch_size)
        self.state_tree = self.initial_state(  # the variables' values copied: the step donates them
            jnp.asarray, [jnp.array(variable.value) for variable in model.trainable_variables],
            [jnp.array(variable.value) for variable in model.non_trainable_variables], np.int32)
        self._train = jax.jit(self._train_step, donate_argnums=0)
        self._predict = jax.jit(lambda trainable, non_trainable, ids: ops.sigmoid(
            precision.float32_logits(self._forward(trainable, non_trainable, ids, False)[0])))

    def step(self, batch) -> float:
        self.state_tree, data_loss = self._train(self.state_tree, batch.compact_ids,
                                                 batch.unique_ids, batch.counts, batch.labels)
        return float(data_loss)

    def _train_step(self, state, compact_ids, unique_ids, counts, labels):
        trainable = state["trainable"]
        rows = [trainable[index][unique_ids] for index in self.table_indices]
        dense = [trainable[index] for index in self.dense_indices]
        loss_scale = state.get("loss_scale")

        def loss_fn(rows, dense):
            values = list(trainable)  # tables stay as they are: the model reads `rows` instead
            for index, value in zip(self.dense_indices, dense):
                values[index] = value
            with common.compact_rows(self.layers, rows):
                logits, non_trainable, losses = self._forward(
                    values, state["non_trainable"], compact_ids, training=True)
            loss, data_loss = common.batch_loss(
                precision.float32_logits(logits), labels, rows, counts, self.layers,
                self.loss_reduction, [precision.float32_logits(loss) for loss in losses])
            return loss if loss_scale is None else loss * loss_scale, (data_loss, non_trainable)

        (row_gradients, dense_gradients), (data_loss, non_trainable) = jax.grad(
            loss_fn, argnums=(0, 1), has_aux=True)(rows, dense)
        if loss_scale is None:
            return self._apply_gradients(state, rows, row_gradients, dense_gradients,
                                         non_trainable, unique_ids, counts), data_loss
        gradients, finite = precision.unscale(list(row_gradients) + list(dense_gradients),
                                              loss_scale)
        new_state = jax.lax.cond(  # an overflowed float16 step changes nothing but the scale
            finite, lambda: self._apply_gradients(
                state, rows, gradients[:len(rows)], gradients[len(rows):], non_trainable,
                unique_ids, counts),
            lambda: {**state, "non_trainable": non_trainable})
        new_state["loss_scale"], new_state["loss_scale_good_steps"] = precision.next_loss_scale(
            loss_scale, state["loss_scale_good_steps"], finite)
        return new_state, data_loss

    def _apply_gradients(self, state, rows, row_gradients, dense_gradients, non_trainable,
                         unique_ids, counts):
        """The new state after one sparse-row / dense update."""
        trainable, slots, rate = state["trainable"], state["slot"], state["learning_rate"]
        step = state["step"] + 1
        new_trainable, new_slots = list(trainable), list(slots)
        for index, table_rows, gradient in zip(self.table_indices, rows, row_gradients):
            slot_rows = {name: slot[unique_ids] for name, slot in slots[index].items()}
            updated, updated_slots = common.updated_rows(self.settings, table_rows, gradient,
                                                         slot_rows, counts, rate)
            new_trainable[index] = trainable[index].at[unique_ids].set(updated)
            new_slots[index] = {name: slots[index][name].at[unique_ids].set(value)
                                for name, value in updated_slots.items()}
        for index, gradient in zip(self.dense_indices, dense_gradients):
            new_trainable[index], new_slots[index] = optimizers.apply(
                self.settings, trainable[index], gradient, slots[index], step, rate)
        return {**state, "trainable": new_trainable, "non_trainable": non_trainable,
                "slot": new_slots, "step": step}

    def _forward(self, trainable, non_trainable, ids, training: bool):
        """`model.stateless_call`, but through `model.__call__`, so `training` reaches nested
        layers (Dropout) even when the model's own `call` takes no `training` argument.

        Returns (logits, new non-trainable values, regularisation losses)."""
        mapping = list(zip(self.model.trainable_variables, trainable)) + \
            list(zip(self.model.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            logits = self.model(ids, training=training)
            losses = self.model.losses
        return logits, [scope.get_current_value(variable)
                        for variable in self.model.non_trainable_variables], losses

    def predict_batch(self, ids):
        return self._predict(self.state_tree["trainable"], self.state_tree["non_trainable"], ids)

    # np.array copies: a view of a buffer that the next (donating) step updates would change
    to_numpy = staticmethod(np.array)
    load_leaf = staticmethod(lambda leaf, value: jnp.asarray(value, leaf.dtype))

    def sync_model(self) -> None:
        """Copies the trained state into the Keras variables (before saving or plain inference)."""
        for prefix, variables in (("trainable", self.model.trainable_variables),
                                  ("non_trainable", self.model.non_trainable_variables)):
            for variable, value in zip(variables, self.state_tree[prefix]):
                variable.assign(value)
