"""The model registry and the contract every registered model keeps.

A model is a `FieldModel` subclass named after its paper, registered under a lower-case key:

    @register("fm")
    @keras.saving.register_keras_serializable(package="criteo_pnn")
    class FM(FieldModel):
        def __init__(self, vocabulary_sizes, *, embedding_dim=20, sparse_l2=0.0, **kwargs): ...

Its input is `field_ids`, int32 [B, F] global ids (field offset + local id), read only through
SparseEmbedding lookups; its output is logits [B, 1]. Hyperparameters are keyword-only
arguments with the paper's Criteo defaults, so `build` can reject unknown keys and
`hyperparameters` can list the defaults. Model modules are imported on demand: `MODELS` imports
all of them when first read, `model_class(name)` only `models.<name>`.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers

import keras
import numpy as np

import models

_CLASSES: dict[str, type] = {}


class _AllModels(collections.abc.Mapping):
    """Read-only view of the registered classes that imports every model module on first use."""

    def __getitem__(self, name: str) -> type:
        models.load_all()
        return _CLASSES[name]

    def __iter__(self):
        models.load_all()
        return iter(_CLASSES)

    def __len__(self) -> int:
        models.load_all()
        return len(_CLASSES)


MODELS: collections.abc.Mapping[str, type] = _AllModels()


def register(name: str):
    """Class decorator adding a model class to `MODELS` under `name`; a duplicate key raises."""

    def decorator(cls: type) -> type:
        if name in _CLASSES:
            raise ValueError(f"model key {name!r} is already registered by "
                             f"{_CLASSES[name].__qualname__}")
        _CLASSES[name] = cls
        return cls

    return decorator


def model_class(name: str) -> type:
    """The class registered under `name`; ValueError listing the known keys otherwise."""
    if name not in _CLASSES and name in models.MODEL_MODULES:
        models.load(name)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _keyword_parameters(cls: type) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _plain(value):
    """Tuples to lists and numpy scalars to Python ones, recursively: what YAML and JSON hold."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def hyperparameters(name: str) -> dict:
    """Keyword defaults of the model's constructor (its paper's Criteo settings)."""
    return {key: _plain(p.default) for key, p in _keyword_parameters(model_class(name)).items()}


def defaults_text(name: str) -> str:
    """The defaults of model `name` as models/README.md's model table shows them (every
    constructor keyword but `sparse_l2`, which every model takes), e.g. "`embedding_dim` 20"."""
    def shown(value) -> str:
        if isinstance(value, list) and len(value) > 1 and len(set(map(repr, value))) == 1:
            return f"{shown(value[0])}×{len(value)}"
        if isinstance(value, list):
            return "[" + ", ".join(map(shown, value)) + "]"
        return {True: "true", False: "false", None: "null"}.get(value, str(value)) \
            if isinstance(value, (bool, type(None))) else str(value)
    items = [f"`{key}` {shown(value)}" for key, value in hyperparameters(name).items()
             if key != "sparse_l2"]
    return ", ".join(items) or "—"


def build(name: str, field_spec, **hparams) -> keras.Model:
    """Constructs model `name` for `field_spec` (anything with `vocabulary_sizes`).

    Raises ValueError naming the model and the key for a hyperparameter the constructor lacks.
    """
    cls = model_class(name)
    accepted = _keyword_parameters(cls)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown hyperparameter(s) {unknown}; "
                         f"accepted: {sorted(accepted)}")
    sizes = [int(size) for size in field_spec.vocabulary_sizes]
    return cls(vocabulary_sizes=sizes, **hparams)


class FieldModel(keras.Model):
    """Base class of the registered models: validates the field sizes and implements get_config.

    `get_config` returns the arguments the constructor was called with (defaults filled in),
    recorded by `__new__` as Keras does for layers. Keras' own recording is switched off for
    Model subclasses, and a hand-written `get_config` per model could forget an argument, which
    would silently fall back to its default on reload.

    Every model's `call(field_ids, training=None)` takes `training` (it switches dropout), even
    models without dropout, so all of them can be called, and `stateless_call`ed, the same way.

    Args:
        vocabulary_sizes: ids per field, in field order; offsets are their cumulative sums.
    Attributes:
        num_fields, total_vocabulary_size.
    """

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls, *args, **kwargs)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:  # bad arguments: __init__ raises the informative error
            arguments = None
        else:
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])  # without self
            arguments.pop("kwargs", None)  # name, trainable, dtype: get_config reads them back
            arguments = _plain(arguments)
        object.__setattr__(instance, "_constructor_arguments", arguments)
        return instance

    def __init__(self, vocabulary_sizes: list[int], **kwargs):
        super().__init__(**kwargs)
        sizes = list(vocabulary_sizes)
        bad = [size for size in sizes if not isinstance(size, numbers.Integral) or size < 1]
        if not sizes or bad:
            raise ValueError(f"{type(self).__name__}: vocabulary_sizes must be a non-empty list "
                             f"of positive ints, got bad entries {bad[:5]}")
        self.num_fields = len(sizes)
        self.total_vocabulary_size = int(sum(sizes))

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                **self._constructor_arguments}
