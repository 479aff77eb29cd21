"""Pure Plotly figure builders: arrays / DataFrames in, plotly.graph_objects.Figure out.

No I/O, no Streamlit. Styling conventions live in _style.py (teacher blue, student red, diverging
RdBu centred at 0 for differences, fixed 0-1 ranges for CKA and attention).
"""
from .attention import attention_grid, class_mean_maps_figure, distillation_comparison, mask_fraction_figure
from .embeddings import embedding_scatter
from .logits import (confusion_heatmaps, disagreement_gallery, per_class_accuracy_bars, reliability_diagram,
                     softened_bars)
from .relations import dark_knowledge_heatmap, relation_matrices, rkd_angle_histogram
from .similarity import cka_heatmap, cka_over_epochs_figure
from .training import training_curves
from ._style import to_display_image

__all__ = [
    "attention_grid", "class_mean_maps_figure", "distillation_comparison", "mask_fraction_figure", "embedding_scatter",
    "confusion_heatmaps", "disagreement_gallery", "per_class_accuracy_bars", "reliability_diagram",
    "softened_bars", "dark_knowledge_heatmap", "relation_matrices", "rkd_angle_histogram", "cka_heatmap",
    "cka_over_epochs_figure", "training_curves", "to_display_image",
]
