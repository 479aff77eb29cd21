"""KD Explorer: one PyTorch engine for exploring knowledge distillation, from a notebook, a CLI or the app."""
__version__ = "0.1.0"


def __getattr__(name):
    # the engine's entry points, imported lazily so `import explorer` stays cheap for the CLI
    if name in ("RunConfig", "MethodTerm", "ConfigError"):
        from . import config
        return getattr(config, name)
    if name in ("run", "Trainer"):
        from . import engine
        return getattr(engine, name)
    if name == "Store":
        from .store import Store
        return Store
    raise AttributeError(name)
