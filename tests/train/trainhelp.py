"""Helpers shared by the training tests (tiny data, tiny models)."""
import torch

from deeparch.data import ArrayDataset
from deeparch.pattern import from_pattern

TINY = "INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> FC-4"
TINY_DROPOUT = "INPUT(8x8x1) -> CONV3-4 -> RELU -> POOL2 -> DROPOUT0.3 -> FC-4"
# conv -> relu -> pool -> dropout with >= 16 maps: prepare_for_training fuses it (the
# compiled kernel, with its own dropout generator)
TINY_FUSED = "INPUT(8x8x1) -> CONV3-16 -> RELU -> POOL2 -> DROPOUT0.3 -> FC-4"


def blobs(n: int = 96, classes: int = 4, seed: int = 0, size: int = 8) -> ArrayDataset:
    """Easy synthetic images: class k lights up quadrant k, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, size, size), generator=g)
    h = size // 2
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k % 4, 2)
        images[i, 0, r * h:(r + 1) * h, c * h:(c + 1) * h] += 150
    return ArrayDataset(images.clamp(0, 255).to(torch.uint8), labels,
                        [f"c{i}" for i in range(classes)], "blobs")


def tiny_model(spec: str = TINY, seed: int = 0):
    torch.manual_seed(seed)
    return from_pattern(spec)

