"""Several replicas with tf.distribute, chosen by `train.distribute` (none, mirrored or
multi_worker: configs/models/README.md). Only the chief (worker 0) publishes; the others train in
step with it.

Input: every worker walks the same seeded sequence of global batches (`train.batch_size` rows, as
with one replica) and keeps only its replicas' contiguous slices of each (`shard_batch`). So no
two replicas see the same row, every worker runs the same number of steps (the collectives must
match), and the run computes what one replica computes at the same global batch, up to the order
of floating-point sums.

Sparse updates: each replica differentiates with respect to the rows of its own unique ids and
hands them over as `tf.IndexedSlices` of the table; the all-reduce of IndexedSlices is the
concatenation of every replica's ids and values. Each replica then sums duplicate ids
(`_update_table`) and applies the same lazy Adam / AdaGrad row update as the one-device
step to its copy of the table and slots; dense weights are all-reduced as dense tensors. Each
replica's loss is its cross-entropy sum over the global batch's rows (`loss_reduction: mean`) and
1 / replicas of the regularisation losses, so the summed gradient is the one-device gradient.

Model code is unchanged: built under `strategy.scope()`, Keras creates mirrored variables.
Not supported (ValueError): the JAX backend, and `precision: mixed_float16` (its loss scale would
need a cross-replica overflow check; `mixed_bfloat16` needs none). `jit_compile` is not applied
under a strategy: the all-reduce and the row merge have data-dependent shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os

import keras
import numpy as np

from models import data
from models.engine import create_train_step
from models.engine.common import batch_loss
from models.engine.tf_step import TensorFlowTrainStep, update_dense, update_rows

MODES = ("none", "mirrored", "multi_worker")
_STRATEGIES: dict = {}  # one per mode and process: MultiWorkerMirroredStrategy can't be rebuilt


def device_name(strategy) -> str:
    """Where training runs, as the stage prints it: "GPU:0", "CPU:0", or the replicas of a
    strategy ("2 replicas: GPU:0, GPU:1")."""
    if strategy is not None:
        devices = [name.split("device:")[-1] for name in strategy.extended.worker_devices]
        return f"{len(devices)} replicas: {', '.join(devices)}"
    if keras.backend.backend() not in ("tensorflow", "jax"):
        return "CPU:0"  # models.engine.create_train_step refuses the backend
    return keras.distribution.list_devices()[0].upper()  # the first GPU (or TPU), else CPU


def create_strategy(mode: str):
    """The tf.distribute strategy of `train.distribute` (None for `none`)."""
    if mode not in MODES:
        raise ValueError(f"config.train.distribute: {mode!r} is not one of {MODES}")
    if mode == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"config.train.distribute: {mode!r} needs KERAS_BACKEND=tensorflow "
                         f"(tf.distribute); the {keras.backend.backend()} runner trains on one "
                         "device, set train.distribute=none")
    if mode not in _STRATEGIES:
        import tensorflow as tf

        if mode == "mirrored":
            devices = tf.config.list_logical_devices("GPU") or \
                tf.config.list_logical_devices("CPU")
            _STRATEGIES[mode] = tf.distribute.MirroredStrategy([device.name for device in devices])
        else:
            if "TF_CONFIG" not in os.environ:
                raise ValueError("config.train.distribute: multi_worker needs TF_CONFIG "
                                 '({"cluster": {"worker": [host:port, ...]}, "task": {"type": '
                                 '"worker", "index": i}}) in every worker\'s environment')
            _STRATEGIES[mode] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES[mode]


def scope(strategy):
    """`strategy.scope()`, or nothing without a strategy."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def is_chief(strategy) -> bool:
    """True for the process that publishes (always, without several workers)."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def worker_index(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def create_step(strategy, model, settings, loss_reduction, jit_compile, eval_batch_size):
    """The train step for `strategy` (the one-device step when it is None)."""
    if strategy is None:
        return create_train_step(model, settings, loss_reduction, jit_compile, eval_batch_size)
    return DistributedTrainStep(strategy, model, settings, loss_reduction, eval_batch_size)


@dataclasses.dataclass
class ReplicaBatches:
    """This worker's share of one global batch: one compact `data.Batch` per local replica.

    rows: rows of the whole global batch (every worker's replicas together).
    step: 1-based index of the global batch within its epoch.
    """
    replicas: list
    rows: int
    step: int


def shard_batch(fields: np.ndarray, labels: np.ndarray, step: int, *, first_replica: int,
                local_replicas: int, total_replicas: int) -> ReplicaBatches:
    """Cuts a global batch [B, F] into `total_replicas` contiguous slices (`np.array_split`) and
    compacts those of this worker's replicas, `local_replicas` from `first_replica`.

    A replica left without rows (a last batch smaller than the replica count) gets an empty
    batch whose one unique id, with count 0, is the batch's first id: it is in the global batch
    anyway, so the union of updated rows is unchanged.
    """
    local = slice(first_replica, first_replica + local_replicas)
    replicas = []
    for replica_fields, replica_labels in zip(np.array_split(fields, total_replicas)[local],
                                              np.array_split(labels, total_replicas)[local]):
        if len(replica_labels):
            replicas.append(data.compact_batch(replica_fields, replica_labels, step, None))
        else:
            replicas.append(data.Batch(
                compact_ids=np.zeros((0, fields.shape[1]), np.int32),
                unique_ids=np.asarray(fields[:1, 0], np.int32), counts=np.zeros(1, np.float32),
                labels=np.zeros(0, np.float32), step=step))
    return ReplicaBatches(replicas, len(fields), step)


class DistributedTrainStep(TensorFlowTrainStep):
    """`TensorFlowTrainStep` whose gradients are all-reduced over the strategy's replicas.

    `step` takes `ReplicaBatches` (`make_batch` builds them for `data.epoch_batches`) and returns
    the data loss of the whole global batch; `predict` runs on this worker's first replica.
    """

    def __init__(self, strategy, model, settings, loss_reduction, eval_batch_size):
        import tensorflow as tf

        with strategy.scope():  # slots, step counter and rate become mirrored variables
            super().__init__(model, settings, loss_reduction, False, eval_batch_size)
        if self.loss_scale is not None:
            raise ValueError("config.train.precision: mixed_float16 is not supported with "
                             "train.distribute (use mixed_bfloat16, which needs no loss scale)")
        self.strategy = strategy
        local_replicas = len(strategy.extended.worker_devices)
        self.first_replica = worker_index(strategy) * local_replicas
        if strategy.num_replicas_in_sync % local_replicas:
            raise ValueError(f"distribute: {strategy.num_replicas_in_sync} replicas in all but "
                             f"{local_replicas} on this worker; every worker needs as many")
        self.make_batch = functools.partial(
            shard_batch, first_replica=self.first_replica, local_replicas=local_replicas,
            total_replicas=strategy.num_replicas_in_sync)
        self._global_rows = None  # set while tracing `_replica_gradients`, read by `loss`
        self._all_reduce_step = tf.function(self._distributed_step, reduce_retracing=True)

    def step(self, batch: ReplicaBatches) -> float:
        import tensorflow as tf

        def replica_inputs(context):
            replica = batch.replicas[context.replica_id_in_sync_group - self.first_replica]
            return tuple(tf.convert_to_tensor(array) for array in (
                replica.compact_ids, replica.unique_ids, replica.counts, replica.labels))

        inputs = self.strategy.experimental_distribute_values_from_function(replica_inputs)
        return float(self._all_reduce_step(inputs, tf.constant(batch.rows, tf.float32)))

    def _distributed_step(self, inputs, global_rows):
        import tensorflow as tf

        strategy = self.strategy
        row_gradients, dense_gradients, data_loss = strategy.run(
            self._replica_gradients, args=(*inputs, global_rows))
        variables = self.tables + self.dense
        reduced = strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, list(zip(list(row_gradients) + list(dense_gradients),
                                                 variables)))
        step = self.step_counter.assign_add(1)
        for index, table, gradient in zip(self.table_indices, self.tables, reduced):
            strategy.extended.update(table, functools.partial(_update_table, self.settings),
                                     args=(gradient, self.slots[index], self.rate), group=False)
        for index, variable, gradient in zip(self.dense_indices, self.dense,
                                             reduced[len(self.tables):]):
            strategy.extended.update(variable, functools.partial(update_dense, self.settings),
                                     args=(gradient, self.slots[index], step, self.rate),
                                     group=False)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, data_loss, axis=None)

    def _replica_gradients(self, compact_ids, unique_ids, counts, labels, global_rows):
        import tensorflow as tf

        self._global_rows = global_rows
        rows, gradients, data_loss = self.gradients(compact_ids, unique_ids, counts, labels)
        table_shapes = [tf.shape(table, out_type=tf.int32) for table in self.tables]
        row_gradients = [tf.IndexedSlices(gradient, unique_ids, shape) for gradient, shape
                         in zip(gradients, table_shapes)]
        return row_gradients, gradients[len(rows):], data_loss

    def loss(self, logits, labels, rows, counts):
        """This replica's share: cross-entropy / the global batch's rows (mean reduction), sparse
        L2 over its own lookups, regularisers / replicas."""
        replicas = self.strategy.num_replicas_in_sync
        extra = [keras.ops.cast(loss, "float32") / replicas for loss in self.model.losses]
        loss, data_loss = batch_loss(logits, labels, rows, counts, self.layers, "sum", extra)
        if self.loss_reduction == "sum":
            return loss, data_loss
        share = data_loss / self._global_rows
        return loss - data_loss + share, share


def _update_table(settings, table, gradient, slots, learning_rate):
    """Per-device update of one table copy from the all-reduced IndexedSlices gradient."""
    import tensorflow as tf

    unique_ids, position = tf.unique(gradient.indices)
    rows_gradient = tf.math.unsorted_segment_sum(gradient.values, position,
                                                 tf.shape(unique_ids)[0])
    update_rows(settings, table, tf.gather(table, unique_ids), slots, unique_ids, rows_gradient,
                None, learning_rate)
