"""Knowledge-distillation methods: one small class per method, all registered here."""
from .base import Batch, HParam, Method, Outputs, PairContext, Paper
from .registry import get_method, list_methods, register_method
# importing a method module registers it; order = catalog order (response, feature, relation)
from . import kd, dkd, dist, ctkd  # noqa: F401,E401
from . import fitnet, at, nst, fsp, vid, ofd, reviewkd, simkd  # noqa: F401,E401
from . import rkd, sp, cc, pkt, irg, crd  # noqa: F401,E401
