"""Schemes (offline, online, self-KD) and algorithms (multi-teacher, data-free, ...): every module in this
folder that registers a Scheme is found by the registry."""
from .base import SCHEMES, RunContext, Scheme, get_scheme, list_schemes, register_scheme

__all__ = ["SCHEMES", "RunContext", "Scheme", "get_scheme", "list_schemes", "register_scheme"]
