"""Datasets: a registry of specs, readers that return RawData, and device-resident splits."""
from .loader import Dataset, augment_batch, draw_views, load_dataset, n_views
from .raw import RawData
from .registry import DATASETS, DatasetSpec, get_dataset_spec, list_datasets, register_dataset

__all__ = ["Dataset", "augment_batch", "draw_views", "load_dataset", "n_views", "RawData", "DATASETS", "DatasetSpec",
           "get_dataset_spec", "list_datasets", "register_dataset"]
