"""The paper's models, one module per model; `models.registry` maps model names to classes.

Importing this package is cheap: `python -m models.gbdt` and `models.libffm` never load Keras or
TensorFlow. The registry imports a model's module when the name is first used. Reading a saved
`.keras` file needs every model class registered with Keras: `import models` registers them when
Keras is already imported (the usual order, `import keras` first), `models.load_all()` at any time.
"""

import importlib
import sys

# Registry name == module name, one per model of the paper.
MODEL_MODULES = ("afm", "ccpm", "deepfm", "ffm", "fm", "fnn", "ipnn", "kfm", "kpnn", "lr", "nifm",
                 "pin")


def load(name: str) -> None:
    """Imports model module `name` (one of MODEL_MODULES): it registers its classes."""
    importlib.import_module(f"models.{name}")


def load_all() -> None:
    """Imports every model module: each registers its classes (registry and Keras)."""
    for name in MODEL_MODULES:
        load(name)


if "keras" in sys.modules:  # Keras is loaded anyway: make saved models loadable right away
    load_all()
