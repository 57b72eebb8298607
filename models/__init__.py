"""Reference Keras models, their offline datasets, metrics and quality bars.

``models`` imports no other package of the toolkit. Import ``models.backend``
(not tensorflow) to get ``tf`` and ``keras``.
"""
from models.errors import CheckFailed, UserError
from models.registry import get, names, register, specs
from models.spec import Metric, ModelSpec, Split, Splits, TensorSig

__all__ = ["get", "names", "register", "specs", "Metric", "ModelSpec", "Split", "Splits", "TensorSig",
           "UserError", "CheckFailed"]
