"""The paper's models; importing this package fills `models.registry.MODELS`."""

from models import fm, ipnn, lr  # noqa: F401  (imported for registration)
