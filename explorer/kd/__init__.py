"""Knowledge-distillation methods: one small class per method, all registered here."""
from .base import Batch, HParam, Method, Outputs, PairContext, Paper
from .registry import get_method, list_methods, register_method
from . import kd  # noqa: F401  (registers)
