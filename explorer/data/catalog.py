"""The datasets KD Explorer knows, each with its reader (one module per format in this folder)."""
from __future__ import annotations

from .cifar import load_cifar
from .digits import load_digits_data
from .idx import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx_dataset
from .image_folder import load_image_folder
from .registry import DatasetSpec, register_dataset
from .shapes import make_shapes

_CIFAR_MEAN = (0.5071, 0.4865, 0.4409)   # CIFAR-100 statistics, as in the CRD benchmark
_CIFAR_STD = (0.2673, 0.2564, 0.2762)
_SMALL_RECIPE = dict(epochs=30, teacher_epochs=40, batch_size=64, lr=0.05)
# The CRD benchmark's recipe (RepDistiller), declared here once: the CIFAR-100 benchmark protocol
# (explorer/bench/protocol.py) reads it, and teachers of these datasets are trained with it (recipes.teacher_recipe
# takes schedule, momentum and weight decay from a recipe that names them): SGD, lr x0.1 at 150/180/210 of 240.
_CIFAR_RECIPE = dict(epochs=240, teacher_epochs=240, batch_size=64, lr=0.05, schedule="step", momentum=0.9,
                     weight_decay=5e-4)


def _digits(root=None, image_size=None):
    return load_digits_data()


def _fashion_mnist(root=None, image_size=None):
    return load_idx_dataset(root or DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES)


def _mnist(root=None, image_size=None):
    if root is None:
        raise FileNotFoundError("mnist needs its IDX files: pass --data-root FOLDER holding "
                                "train-images-idx3-ubyte(.gz) and the other three files")
    return load_idx_dataset(root, MNIST_CLASSES)


def _cifar(num_classes):
    def read(root=None, image_size=None):
        if root is None:
            raise FileNotFoundError(f"cifar{num_classes} needs the python-pickle batches: pass --data-root FOLDER "
                                    f"(or run `kd-explorer download cifar{num_classes} FOLDER` once)")
        return load_cifar(root, num_classes)
    return read


def _shapes(root=None, image_size=None):
    return make_shapes(n_train=5000, n_test=1000, seed=0, size=image_size or 32)


def _folder(root=None, image_size=None):
    if root is None:
        raise FileNotFoundError("folder needs --data-root FOLDER with one subfolder of images per class")
    return load_image_folder(root, image_size or 32)


register_dataset(DatasetSpec(
    "digits", "scikit-learn's bundled real handwritten digits, 8x8 grey (1,797 images): no download",
    _digits, 10, (1, 8, 8), (0.3336,), (0.3780,), "crop", 1, "cnn_large", "cnn_tiny", recipe=_SMALL_RECIPE))
register_dataset(DatasetSpec(
    "fashion-mnist", "Zalando's Fashion-MNIST, 28x28 grey, real IDX files (Debian: dataset-fashion-mnist)",
    _fashion_mnist, 10, (1, 28, 28), (0.2860,), (0.3530,), "crop_flip", 2, "resnet20", "resnet8",
    default_root=DEFAULT_FASHION_MNIST_ROOT, recipe=dict(epochs=10, teacher_epochs=15, batch_size=128, lr=0.05)))
register_dataset(DatasetSpec(
    "mnist", "MNIST handwritten digits, 28x28 grey, IDX files from a folder you name",
    _mnist, 10, (1, 28, 28), (0.1307,), (0.3081,), "crop", 2, "resnet20", "resnet8", needs_root=True,
    recipe=dict(epochs=10, teacher_epochs=15, batch_size=128, lr=0.05)))
register_dataset(DatasetSpec(
    "cifar10", "CIFAR-10, 32x32 colour, python-pickle batches from a folder you name",
    _cifar(10), 10, (3, 32, 32), _CIFAR_MEAN, _CIFAR_STD, "crop_flip", 4, "resnet32x4", "resnet8x4",
    needs_root=True, recipe=_CIFAR_RECIPE))
register_dataset(DatasetSpec(
    "cifar100", "CIFAR-100 (fine labels), 32x32 colour, python-pickle batches from a folder you name",
    _cifar(100), 100, (3, 32, 32), _CIFAR_MEAN, _CIFAR_STD, "crop_flip", 4, "resnet32x4", "resnet8x4",
    needs_root=True, recipe=_CIFAR_RECIPE))
register_dataset(DatasetSpec(
    "shapes", "procedural seeded shapes on clutter, 32x32 colour, object boxes known (for judging attention)",
    _shapes, 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "crop_flip", 4, "resnet20", "resnet8",
    takes_image_size=True, recipe=dict(epochs=15, teacher_epochs=20, batch_size=128, lr=0.05)))
register_dataset(DatasetSpec(
    "folder", "your own images: one subfolder per class (optionally train/ and test/)",
    _folder, None, None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "crop_flip", 4, "resnet20", "resnet8",
    needs_root=True, takes_image_size=True, recipe=dict(epochs=20, teacher_epochs=30, batch_size=64, lr=0.05)))
