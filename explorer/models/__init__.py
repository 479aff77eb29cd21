"""Model zoo: plain CNNs for tiny inputs and the CIFAR families of the CRD KD benchmark.

    from explorer.models import create_model, list_models, model_info, tap, stage_specs
    model = create_model("resnet8x4", num_classes=100)
    with tap(model, stage_specs(model)) as feats:
        logits = model(x)
"""
from . import cnn, mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401  (registers)
from .registry import create_model, get_model_spec, list_models, model_info, register_model
from .taps import TapError, embedding_spec, stage_specs, tap

__all__ = ["create_model", "list_models", "model_info", "get_model_spec", "register_model", "tap",
           "TapError", "stage_specs", "embedding_spec"]
