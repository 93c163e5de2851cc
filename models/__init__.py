"""The paper's models; importing this package fills `models.registry.MODELS`."""

# Imported for their @register side effect.
from models import afm, ccpm, deepfm, ffm, fm, fnn, ipnn, kfm, kpnn, lr, nifm, pin  # noqa: F401
