"""Model zoo (every module in this folder that registers a model is found by the registry): plain CNNs for tiny inputs and the CIFAR families of the CRD KD benchmark.

    from explorer.models import create_model, list_models, model_info, tap, stage_specs
    model = create_model("resnet8x4", num_classes=100)
    with tap(model, stage_specs(model)) as feats:
        logits = model(x)
"""
from .registry import MODELS, create_model, get_model_spec, list_models, model_info, register_model
from .taps import TapError, embedding_spec, stage_specs, tap

__all__ = ["MODELS", "create_model", "list_models", "model_info", "get_model_spec", "register_model", "tap",
           "TapError", "stage_specs", "embedding_spec"]
