"""Class names of the benchmark datasets and the ZegCLIP zero-shot splits (protocol.md, "Splits").

Names and train-id order follow mmsegmentation (PascalVOCDataset without background;
COCOStuffDataset for the 164k version; PascalContextDataset59), which ZegCLIP's configs use. The
unseen lists are ZegCLIP's: VOC train ids 15..19; COCO-Stuff train ids 19, 23, 28, 29, 36, 51, 76,
88, 94, 112, 133, 136, 137, 157, 160; Context-59 (Cascade-CLIP configs/context_59, `novel_class`)
train ids 0, 2, 3, 7, 9, 13, 17, 19, 31, 37.

The evaluation targets of the open-vocabulary protocol (issue 20; ZegCLIP's cross-dataset targets):
- voc21: VOC with background a scored class, FIRST (train id 0 = raw 0): ZegCLIP's
  ZeroPascalVOCDataset21 (configs/_base_/datasets/dataloader/__pycache__/voc12_21.cpython-37.pyc,
  commit 9ba4bb5c9b621c04005fb9cef7254e79bb9c9991: CLASSES ('background', 'aeroplane', ...,
  'tvmonitor'), reduce_zero_label False), mmseg's PascalVOCDataset and FC-CLIP's
  PASCAL_VOC_21_CATEGORIES (fcclip/data/datasets/openseg_classes.py, id 0 "background").
- context60: Context with background a scored class, first: ZegCLIP's ZeroPascalContextDataset60
  (dataloader/__pycache__/context60.cpython-37.pyc, same commit; reduce_zero_label False), i.e.
  mmseg's PascalContextDataset; the other 59 names are CONTEXT59_CLASSES.
- context459: the 459 PASCAL-Context classes in labels.txt id order (train id = id - 1), named as
  MendelXu/SAN san/data/datasets/register_pcontext.py PCONTEXT_FULL_SEM_SEG_CATEGORIES (lines 68-528,
  commit e19262d1a23992fc2cef934d6756b89ff50fe5c3), identical to FC-CLIP's PASCAL_CTX_459_CATEGORIES
  names and, without spaces, to CAT-Seg's datasets/pc459.json.
- ade20k_150: mmseg's ADE20KDataset classes (= ZegCLIP's ZeroADE20KDataset in
  dataloader/__pycache__/ade20k.cpython-37.pyc and KU-CVLAB/CAT-Seg datasets/ade150.json) with the
  trailing space of mmseg's "bed " removed (SAN strips its names the same way before use).
- ade20k_847: ldvc/data/ade20k_847_classes.py.
The names used inside text prompts, which differ between the reference implementations, are in
ldvc/data/prompts.py (`dataset_prompts`, `dataset_templates`).
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

VOC21_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)
CONTEXT60_CLASSES: tuple[str, ...] = ("background", *CONTEXT59_CLASSES)

# PASCAL-Context's 459 classes, labels.txt id order (id k -> train id k - 1); SAN's spelling.
CONTEXT459_CLASSES: tuple[str, ...] = (
    "accordion", "aeroplane", "air conditioner", "antenna", "artillery", "ashtray", "atrium", "baby carriage", "bag",
    "ball", "balloon", "bamboo weaving", "barrel", "baseball bat", "basket", "basketball backboard", "bathtub", "bed",
    "bedclothes", "beer", "bell", "bench", "bicycle", "binoculars", "bird", "bird cage", "bird feeder", "bird nest",
    "blackboard", "board", "boat", "bone", "book", "bottle", "bottle opener", "bowl", "box", "bracelet", "brick",
    "bridge", "broom", "brush", "bucket", "building", "bus", "cabinet", "cabinet door", "cage", "cake", "calculator",
    "calendar", "camel", "camera", "camera lens", "can", "candle", "candle holder", "cap", "car", "card", "cart",
    "case", "casette recorder", "cash register", "cat", "cd", "cd player", "ceiling", "cell phone", "cello", "chain",
    "chair", "chessboard", "chicken", "chopstick", "clip", "clippers", "clock", "closet", "cloth", "clothes tree",
    "coffee", "coffee machine", "comb", "computer", "concrete", "cone", "container", "control booth", "controller",
    "cooker", "copying machine", "coral", "cork", "corkscrew", "counter", "court", "cow", "crabstick", "crane",
    "crate", "cross", "crutch", "cup", "curtain", "cushion", "cutting board", "dais", "disc", "disc case",
    "dishwasher", "dock", "dog", "dolphin", "door", "drainer", "dray", "drink dispenser", "drinking machine", "drop",
    "drug", "drum", "drum kit", "duck", "dumbbell", "earphone", "earrings", "egg", "electric fan", "electric iron",
    "electric pot", "electric saw", "electronic keyboard", "engine", "envelope", "equipment", "escalator",
    "exhibition booth", "extinguisher", "eyeglass", "fan", "faucet", "fax machine", "fence", "ferris wheel",
    "fire extinguisher", "fire hydrant", "fire place", "fish", "fish tank", "fishbowl", "fishing net", "fishing pole",
    "flag", "flagstaff", "flame", "flashlight", "floor", "flower", "fly", "foam", "food", "footbridge", "forceps",
    "fork", "forklift", "fountain", "fox", "frame", "fridge", "frog", "fruit", "funnel", "furnace", "game controller",
    "game machine", "gas cylinder", "gas hood", "gas stove", "gift box", "glass", "glass marble", "globe", "glove",
    "goal", "grandstand", "grass", "gravestone", "ground", "guardrail", "guitar", "gun", "hammer", "hand cart",
    "handle", "handrail", "hanger", "hard disk drive", "hat", "hay", "headphone", "heater", "helicopter", "helmet",
    "holder", "hook", "horse", "horse-drawn carriage", "hot-air balloon", "hydrovalve", "ice", "inflator pump",
    "ipod", "iron", "ironing board", "jar", "kart", "kettle", "key", "keyboard", "kitchen range", "kite", "knife",
    "knife block", "ladder", "ladder truck", "ladle", "laptop", "leaves", "lid", "life buoy", "light", "light bulb",
    "lighter", "line", "lion", "lobster", "lock", "machine", "mailbox", "mannequin", "map", "mask", "mat",
    "match book", "mattress", "menu", "metal", "meter box", "microphone", "microwave", "mirror", "missile", "model",
    "money", "monkey", "mop", "motorbike", "mountain", "mouse", "mouse pad", "musical instrument", "napkin", "net",
    "newspaper", "oar", "ornament", "outlet", "oven", "oxygen bottle", "pack", "pan", "paper", "paper box",
    "paper cutter", "parachute", "parasol", "parterre", "patio", "pelage", "pen", "pen container", "pencil", "person",
    "photo", "piano", "picture", "pig", "pillar", "pillow", "pipe", "pitcher", "plant", "plastic", "plate",
    "platform", "player", "playground", "pliers", "plume", "poker", "poker chip", "pole", "pool table", "postcard",
    "poster", "pot", "pottedplant", "printer", "projector", "pumpkin", "rabbit", "racket", "radiator", "radio",
    "rail", "rake", "ramp", "range hood", "receiver", "recorder", "recreational machines", "remote control", "road",
    "robot", "rock", "rocket", "rocking horse", "rope", "rug", "ruler", "runway", "saddle", "sand", "saw", "scale",
    "scanner", "scissors", "scoop", "screen", "screwdriver", "sculpture", "scythe", "sewer", "sewing machine", "shed",
    "sheep", "shell", "shelves", "shoe", "shopping cart", "shovel", "sidecar", "sidewalk", "sign", "signal light",
    "sink", "skateboard", "ski", "sky", "sled", "slippers", "smoke", "snail", "snake", "snow", "snowmobiles", "sofa",
    "spanner", "spatula", "speaker", "speed bump", "spice container", "spoon", "sprayer", "squirrel", "stage",
    "stair", "stapler", "stick", "sticky note", "stone", "stool", "stove", "straw", "stretcher", "sun", "sunglass",
    "sunshade", "surveillance camera", "swan", "sweeper", "swim ring", "swimming pool", "swing", "switch", "table",
    "tableware", "tank", "tap", "tape", "tarp", "telephone", "telephone booth", "tent", "tire", "toaster", "toilet",
    "tong", "tool", "toothbrush", "towel", "toy", "toy car", "track", "train", "trampoline", "trash bin", "tray",
    "tree", "tricycle", "tripod", "trophy", "truck", "tube", "turtle", "tvmonitor", "tweezers", "typewriter",
    "umbrella", "unknown", "vacuum cleaner", "vending machine", "video camera", "video game console", "video player",
    "video tape", "violin", "wakeboard", "wall", "wallet", "wardrobe", "washing machine", "watch", "water",
    "water dispenser", "water pipe", "water skate board", "watermelon", "whale", "wharf", "wheel", "wheelchair",
    "window", "window blinds", "wineglass", "wire", "wood", "wool",
)

# ADE20K SceneParsing, the 150 classes of objectInfo150 order (annotation value k -> train id k - 1).
ADE20K_150_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
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
assert len(VOC21_CLASSES) == 21 and len(CONTEXT60_CLASSES) == 60
assert len(CONTEXT459_CLASSES) == len(set(CONTEXT459_CLASSES)) == 459
assert len(ADE20K_150_CLASSES) == len(set(ADE20K_150_CLASSES)) == 150

# data.dataset -> its class list (train-id order) for every dataset with a fixed vocabulary.
FIXED_CLASSES: dict[str, tuple[str, ...]] = {
    "voc": VOC_CLASSES,
    "voc21": VOC21_CLASSES,
    "coco_stuff": COCO_STUFF_CLASSES,
    "context59": CONTEXT59_CLASSES,
    "context60": CONTEXT60_CLASSES,
    "context459": CONTEXT459_CLASSES,
    "ade20k_150": ADE20K_150_CLASSES,
}


def fixed_classes(dataset: str) -> tuple[str, ...]:
    """The class list of a dataset with a fixed vocabulary (every archive dataset); KeyError otherwise."""
    if dataset == "ade20k_847":
        from ldvc.data.ade20k_847_classes import ADE20K_847_CLASSES  # 847 entries: loaded only when used

        return ADE20K_847_CLASSES
    return FIXED_CLASSES[dataset]


def dataset_classes(data_cfg: DataConfig) -> list[str]:
    """Class names in train-id order for `data_cfg.dataset` (before anything is prepared)."""
    if data_cfg.dataset in FIXED_CLASSES or data_cfg.dataset == "ade20k_847":
        return list(fixed_classes(data_cfg.dataset))
    if data_cfg.dataset == "synthetic":
        from ldvc.data.synthetic import WORLDS  # another module's worlds; imported only when used

        return list(WORLDS[data_cfg.synthetic.world].classes)
    if data_cfg.dataset == "coco_json":
        from ldvc.data.coco_json import coco_json_classes

        return coco_json_classes(data_cfg.coco_json)
    known = " | ".join([*FIXED_CLASSES, "ade20k_847", "coco_json", "synthetic"])
    raise ValueError(f"data.dataset = {data_cfg.dataset!r}: unknown ({known})")


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
