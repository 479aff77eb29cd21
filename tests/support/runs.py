"""Checks on finished runs that recompute a stored figure from the stored files."""
import torch

from explorer.checkpoints import load_checkpoint_into
from explorer.data import load_dataset
from explorer.engine import evaluate
from explorer.models import create_model
from explorer.recipes import resolve
from explorer.store import Store


def stored_student_test_acc(store: Store, run_id: str) -> float:
    """The test accuracy of the student saved in the run's model.pt, evaluated afresh on the test split."""
    run = store.get_run(run_id)
    cfg = resolve(run["config"])
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.n_train, torch.device("cpu"), cfg.image_size)
    c, h, _ = data.shape
    model = create_model(cfg.student, num_classes=data.num_classes, in_channels=c, image_size=h)
    load_checkpoint_into(model, store.artifacts(run["id"])["model"], "student")
    return evaluate(model, data, "test")


def split_size(dataset: str, data_root: str | None = None) -> int:
    return len(load_dataset(dataset, data_root, None, torch.device("cpu")).test)
