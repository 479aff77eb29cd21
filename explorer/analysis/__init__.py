"""Pure analysis of the knowledge gap between a teacher and a student.

Tensors / arrays in; floats, numpy arrays or pandas DataFrames out. No plotting, no Streamlit.
Modules: attention (AT maps, Grad-CAM, saliency, IG), cka (linear / RBF / minibatch CKA of two
representations), cka_stages (every stage against every stage, cached Grams), cka_epochs (CKA over
a run's probe epochs), relations (cosine / RKD relation matrices, dark knowledge), logits
(agreement, calibration, disagreements), mask_fraction (how much of a map falls inside
the object mask, for datasets that know it), embeddings (2-D projections), probes (per-epoch probe files).
Every view accepts a loaded probe's dicts directly (see probes.py for the format).
"""
from .attention import (activation_attention, at_map, black_baseline, class_mean_maps, gradcam,
                        integrated_gradients, map_gap, normalize_maps, saliency, stage_attention, stage_maps)
from .cka import CKAAccumulator, hsic_unbiased, linear_cka, minibatch_cka, rbf_cka, stage_features
from .cka_epochs import cka_over_epochs
from .cka_stages import StageGrams, cka_from_grams, cka_matrix, features_for, stage_grams
from .embeddings import project, tsne_perplexity
from .mask_fraction import class_mask_fractions, mask_area, mask_fraction, stage_mask_fractions
from .logits import (agreement, calibration, confusion, disagreements, per_class_accuracy, per_sample_kl,
                     soften)
from .probes import PROBE_VERSION, capture_probe, list_probes, load_probe, probe_path, save_probe
from .relations import (class_boundaries, cosine_gram, dark_knowledge, relation_gap, rkd_angle_stats,
                        rkd_distance_matrix, sort_by_class)

__all__ = [
    "activation_attention", "at_map", "black_baseline", "class_mean_maps", "gradcam",
    "integrated_gradients", "map_gap", "normalize_maps", "saliency", "stage_attention", "stage_maps",
    "CKAAccumulator", "StageGrams", "cka_from_grams", "stage_grams", "cka_matrix", "cka_over_epochs", "features_for", "hsic_unbiased", "linear_cka",
    "minibatch_cka", "rbf_cka", "stage_features",
    "project", "tsne_perplexity",
    "class_mask_fractions", "mask_area", "mask_fraction", "stage_mask_fractions",
    "agreement", "calibration", "confusion", "disagreements", "per_class_accuracy", "per_sample_kl", "soften",
    "PROBE_VERSION", "capture_probe", "list_probes", "load_probe", "probe_path", "save_probe",
    "class_boundaries", "cosine_gram", "dark_knowledge", "relation_gap", "rkd_angle_stats",
    "rkd_distance_matrix", "sort_by_class",
]
