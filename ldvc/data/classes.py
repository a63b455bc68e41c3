"""Class names of the benchmark datasets and the ZegCLIP zero-shot splits (protocol.md, "Splits").

Names and train-id order follow mmsegmentation (PascalVOCDataset without background;
COCOStuffDataset for the 164k version; PascalContextDataset59), which ZegCLIP's configs use. The
unseen lists are ZegCLIP's: VOC train ids 15..19; COCO-Stuff train ids 19, 23, 28, 29, 36, 51, 76,
88, 94, 112, 133, 136, 137, 157, 160; Context-59 (Cascade-CLIP configs/context_59, `novel_class`)
train ids 0, 2, 3, 7, 9, 13, 17, 19, 31, 37.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ldvc.config import DataConfig

# VOC 2012 without background: raw label 1..20 -> train id 0..19.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

# COCO-Stuff 164k: 80 things then 91 stuff classes (171 train ids, mmseg order and spelling).
COCO_STUFF_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other",
    "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)

# PASCAL Context-59 (background -> ignore): Cascade-CLIP's ZeroPascalVOCDataset59.CLASSES, the order
# of mmseg's PascalContextDataset59 without 'background' (= ascending PASCAL-Context 459-class id).
CONTEXT59_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup",
    "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard",
    "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road",
    "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train",
    "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)

VOC_UNSEEN: tuple[str, ...] = ("pottedplant", "sheep", "sofa", "train", "tvmonitor")
COCO_STUFF_UNSEEN: tuple[str, ...] = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
    "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete",
)

CONTEXT59_UNSEEN: tuple[str, ...] = (
    "aeroplane", "bed", "bedclothes", "boat", "bottle", "car", "cloth", "cow", "keyboard", "plate",
)

assert len(VOC_CLASSES) == 20 and len(COCO_STUFF_CLASSES) == 171 and len(CONTEXT59_CLASSES) == 59


def dataset_classes(data_cfg: DataConfig) -> list[str]:
    """Class names in train-id order for `data_cfg.dataset` (before anything is prepared)."""
    if data_cfg.dataset == "voc":
        return list(VOC_CLASSES)
    if data_cfg.dataset == "coco_stuff":
        return list(COCO_STUFF_CLASSES)
    if data_cfg.dataset == "context59":
        return list(CONTEXT59_CLASSES)
    if data_cfg.dataset == "synthetic":
        from ldvc.data.synthetic import WORLDS  # another module's worlds; imported only when used

        return list(WORLDS[data_cfg.synthetic.world].classes)
    if data_cfg.dataset == "coco_json":
        from ldvc.data.coco_json import coco_json_classes

        return coco_json_classes(data_cfg.coco_json)
    raise ValueError(
        f"data.dataset = {data_cfg.dataset!r}: unknown (voc | coco_stuff | context59 | coco_json | synthetic)"
    )


def default_unseen(dataset: str) -> list[str]:
    """ZegCLIP's unseen classes of `dataset` (synthetic: the synthetic world's default)."""
    if dataset == "voc":
        return list(VOC_UNSEEN)
    if dataset == "coco_stuff":
        return list(COCO_STUFF_UNSEEN)
    if dataset == "context59":
        return list(CONTEXT59_UNSEEN)
    if dataset == "synthetic":
        from ldvc.data.synthetic import DEFAULT_UNSEEN

        return list(DEFAULT_UNSEEN)
    raise ValueError(
        f"dataset {dataset!r} has no default zero-shot split: set split.unseen in params.yaml to a "
        f"list of class names, e.g. split: {{unseen: [cat, dog]}}"
    )
