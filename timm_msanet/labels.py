"""The package's one class order.

Every exporter writes these folder names, every model cfg carries them as `label_names`, and since
ImageFolder (timm's `create_dataset('')` included) sorts folder names, the sorted order *is* the class
index order. Keep the tuples sorted: a test checks it.
"""
from typing import Tuple

FER7_LABELS: Tuple[str, ...] = ('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')
FER8_LABELS: Tuple[str, ...] = tuple(sorted(FER7_LABELS + ('contempt',)))


def labels_for(num_classes: int) -> Tuple[str, ...]:
    if num_classes == 7:
        return FER7_LABELS
    if num_classes == 8:
        return FER8_LABELS
    raise ValueError(f'FER label sets have 7 or 8 classes, got num_classes={num_classes}')
