"""Knowledge-distillation methods: one small class per file in this folder, found by the registry."""
from .base import Batch, HParam, Method, Outputs, PairContext, Paper
from .registry import METHODS, get_method, list_methods, register_method

__all__ = ["Batch", "HParam", "Method", "Outputs", "PairContext", "Paper", "METHODS", "get_method",
           "list_methods", "register_method"]
