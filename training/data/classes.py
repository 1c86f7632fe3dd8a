"""The class table: names, train ids, colours and thing/stuff flags, in one place.

The table is the 19 Cityscapes evaluation classes, so a model trained on the
procedural scenes and one trained on Cityscapes share one output layout. The
procedural generator draws a subset of them (`PROCEDURAL_CLASSES`); classes that
never occur in a dataset are simply never the target of any pixel.

This module imports nothing beyond numpy and `scene_contract`, whose `ClassInfo` each
class is. The exporter writes the table into the model card, which is where the
service reads it from.

Label conventions shared by every dataset in the project:

- semantic: ``uint8 [H, W]`` train ids, ``IGNORE_INDEX`` (255) where unlabelled;
- instance: ``int32 [H, W]``, 0 where the pixel belongs to no instance,
  ``INSTANCE_UNKNOWN`` (-1) where the dataset does not say, otherwise
  ``train_id * INSTANCE_DIVISOR + k`` with ``k`` in ``[0, INSTANCE_DIVISOR)``
  numbering the instances of that class in the image. The highest possible id,
  18 * 1000 + 999, fits a 16-bit PNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from scene_contract import drawing
from scene_contract.card import ClassInfo

IGNORE_INDEX = 255
INSTANCE_DIVISOR = 1000
# Instance id of a pixel whose instance is not known (a dataset without instance
# labels): unlike 0 ("belongs to no instance"), it carries no target at all.
INSTANCE_UNKNOWN = -1


# One `ClassInfo` per class, the type the model card carries: name, train id (the output
# channel), Cityscapes labelIds value, RGB colour (the Cityscapes palette), thing flag.
CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("road", 0, 7, (128, 64, 128), False),
    ClassInfo("sidewalk", 1, 8, (244, 35, 232), False),
    ClassInfo("building", 2, 11, (70, 70, 70), False),
    ClassInfo("wall", 3, 12, (102, 102, 156), False),
    ClassInfo("fence", 4, 13, (190, 153, 153), False),
    ClassInfo("pole", 5, 17, (153, 153, 153), False),
    ClassInfo("traffic light", 6, 19, (250, 170, 30), False),
    ClassInfo("traffic sign", 7, 20, (220, 220, 0), False),
    ClassInfo("vegetation", 8, 21, (107, 142, 35), False),
    ClassInfo("terrain", 9, 22, (152, 251, 152), False),
    ClassInfo("sky", 10, 23, (70, 130, 180), False),
    ClassInfo("person", 11, 24, (220, 20, 60), True),
    ClassInfo("rider", 12, 25, (255, 0, 0), True),
    ClassInfo("car", 13, 26, (0, 0, 142), True),
    ClassInfo("truck", 14, 27, (0, 0, 70), True),
    ClassInfo("bus", 15, 28, (0, 60, 100), True),
    ClassInfo("train", 16, 31, (0, 80, 100), True),
    ClassInfo("motorcycle", 17, 32, (0, 0, 230), True),
    ClassInfo("bicycle", 18, 33, (119, 11, 32), True),
)

NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
THING_TRAIN_IDS: tuple[int, ...] = tuple(c.train_id for c in CLASSES if c.is_thing)

_BY_NAME = {c.name: c for c in CLASSES}

PROCEDURAL_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "pole",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "car",
)


def train_id(name: str) -> int:
    """Train id of the class called ``name``; raises ``KeyError`` listing valid names."""
    try:
        return _BY_NAME[name].train_id
    except KeyError:
        raise KeyError(f"unknown class {name!r}; valid names: {', '.join(CLASS_NAMES)}") from None


def palette() -> npt.NDArray[np.uint8]:
    """Colour lookup table ``uint8 [256, 3]`` of `CLASSES` (see `scene_contract.drawing.palette`)."""
    return drawing.palette((c.train_id, c.color) for c in CLASSES)


def cityscapes_to_train_id() -> npt.NDArray[np.uint8]:
    """Lookup table ``uint8 [256]`` from Cityscapes ``labelIds`` to train ids (255 if unused)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in CLASSES:
        # Every class here has a Cityscapes id; only a card's ClassInfo may lack one.
        assert c.cityscapes_id is not None, c.name
        table[c.cityscapes_id] = c.train_id
    return table


def is_thing_table() -> npt.NDArray[np.bool_]:
    """Boolean lookup ``[256]`` indexed by train id: True for thing classes."""
    table = np.zeros(256, dtype=bool)
    table[list(THING_TRAIN_IDS)] = True
    return table


def class_table_json() -> list[dict[str, Any]]:
    """The class table as JSON-ready dicts, as the model card spells it (for manifests)."""
    return [c.to_dict() for c in CLASSES]
