"""The training engine: the step with sparse row updates for TensorFlow (`tf_step.py`) or JAX
(`jax_step.py`), on the backend-neutral parts of `common.py` (imports go common <- *_step <- here).

Per batch (see `models/data.Batch`): gather `rows = table[unique_ids]` for every `SparseEmbedding`,
run the model on compact ids with those rows as the layers' `batch_rows` (`common.compact_rows`),
differentiate with respect to the rows and the dense weights, then update only the touched rows
and their optimiser slot rows (`models/optimizers.py`). Both steps offer `step(batch) -> data
loss`, `predict(ids)`, `state()` / `load_state()` (a checkpoint), `weights()` and `sync_model()`.
"""

from __future__ import annotations

import keras

from models.engine.common import tune_memory_allocator  # noqa: F401 (the runners call it)


def create_train_step(model: keras.Model, settings, loss_reduction: str, jit_compile: bool,
                      eval_batch_size: int):
    """The train step object for the active Keras backend (tensorflow or jax)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from models.engine.tf_step import TensorFlowTrainStep

        return TensorFlowTrainStep(model, settings, loss_reduction, jit_compile, eval_batch_size)
    if backend == "jax":
        from models.engine.jax_step import JaxTrainStep

        return JaxTrainStep(model, settings, loss_reduction, eval_batch_size)
    raise ValueError(f"KERAS_BACKEND={backend!r}: the runner supports tensorflow and jax")
