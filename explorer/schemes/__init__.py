"""Schemes (offline, online, self-KD) and algorithms (multi-teacher, data-free, ...): a registry."""
from .base import RunContext, Scheme, get_scheme, list_schemes, register_scheme
from . import offline  # noqa: F401  (registers)
from . import online, self_kd, takd, multi_teacher, data_free, adversarial, cross_modal  # noqa: F401,E402
