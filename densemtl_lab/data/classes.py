"""Semantic class tables shared by the datasets: Cityscapes train ids, names, colours and label maps.

The toy scenes use Cityscapes train ids too, so one palette and one metric code serve every dataset.
Label-id maps are from the Cityscapes label table (cityscapesScripts) and the DenseMTL loaders
(`dataset/semseg/mappings.py`); everything not listed maps to the ignore index.
"""

from __future__ import annotations

import colorsys

#: The 19 Cityscapes train-id class names, index = train id.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

#: The official Cityscapes colours (RGB) of the 19 train ids.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

#: Cityscapes label id (gtFine_labelIds) -> train id, per class set.
CITYSCAPES_LABEL_MAPS: dict[int, dict[int, int]] = {
    19: {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
         25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18},
    # SYNTHIA-compatible: the 19 minus terrain, truck and train, renumbered.
    16: {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10, 25: 11,
         26: 12, 28: 13, 32: 14, 33: 15},
    # The 16 minus wall, fence and pole ("mIoU*" of the SYNTHIA -> Cityscapes literature).
    13: {7: 0, 8: 1, 11: 2, 19: 3, 20: 4, 21: 5, 23: 6, 24: 7, 25: 8, 26: 9, 28: 10, 32: 11,
         33: 12},
    # DenseMTL's Virtual KITTI 2 <-> Cityscapes set (car and bus -> vehicle).
    8: {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 23: 6, 26: 7, 28: 7},
}

#: Train-id names of each Cityscapes class set.
CITYSCAPES_SET_NAMES: dict[int, tuple[str, ...]] = {
    19: CITYSCAPES_CLASSES,
    16: ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
         "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle"),
    13: ("road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky",
         "person", "rider", "car", "bus", "motorcycle", "bicycle"),
    8: ("road", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky", "vehicle"),
}


def palette_for(names: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    """Colours for a class list: the Cityscapes colour of each name ('vehicle' takes car's)."""
    lookup = dict(zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE))
    lookup["vehicle"] = lookup["car"]
    colours = []
    for index, name in enumerate(names):
        colours.append(lookup.get(name, _fallback_colour(index)))
    return tuple(colours)


def _fallback_colour(index: int) -> tuple[int, int, int]:
    """A distinct, deterministic colour for classes outside the Cityscapes table (e.g. NYUv2's 40)."""
    golden = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(golden, 0.65, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Cityscapes colours for ids < 19, distinct generated colours beyond (e.g. NYUv2's 40 classes)."""
    extra = palette_for(tuple(f"class {index}" for index in range(len(CITYSCAPES_PALETTE), num_classes)))
    return [*CITYSCAPES_PALETTE, *extra][:max(num_classes, 1)]
