"""torchvision image-pipeline references (tests/fixtures/images_*).

Every answer here is torchvision's (0.14) or PIL's own, asked directly: nothing of their
logic is re-implemented. Read by the data tests of data/image_folder.h and
data/image_transforms.h.

images_folder_rule.safetensors: torchvision.datasets.ImageFolder's classes and samples on a
  temporary tree built to stress its rules (code-point sort of classes, hidden folders,
  folder-path sort of the walk where '-' and '.' sort before '/', extensions in any case,
  ignored names, folders named like images, a file at the root).
  metadata: files (JSON list of relative file paths to create, empty files), dirs (JSON
  list of extra empty folders to create), classes (ImageFolder.classes), samples (relative
  paths in ImageFolder.samples order), extensions (torchvision's IMG_EXTENSIONS);
  tensor labels I32 [N] (ImageFolder.targets).

images_rrc_fallback.safetensors: RandomResizedCrop.get_params in its deterministic
  fallback (scale_min > 1, so all 10 tries miss), the centred crop with the ratio clamped.
  params F32 [K, 6] = (height, width, scale_min, scale_max, ratio_min, ratio_max), every
  float rounded to float32 before torchvision saw it; boxes I32 [K, 4] = (top, left,
  height, width) as get_params returned them.

images_resized_crop.safetensors: F.resized_crop(PIL RGB image, top, left, height, width,
  [out_h, out_w], BILINEAR) (PIL's antialiased bilinear), then F.hflip where flip is 1.
  case<k>.image I32 [H, W, 3], case<k>.box I32 [4] (top, left, height, width),
  case<k>.size I32 [2] (out_h, out_w), case<k>.flip I32 [1], case<k>.output I32
  [out_h, out_w, 3]; metadata cases = K, names = what each case covers.

images_eval_resize.safetensors: Resize(S) (int: the shorter side) and CenterCrop(C).
  sizes I32 [K, 2] (H, W), resize I32 [K] (S), resized I32 [K, 2] (the (H, W) of F.resize's
  PIL output), crop I32 [K] (C), crop_boxes I32 [K, 4] (top, left, C, C) of F.center_crop
  on the resized size, read back from an index image; pipeline.image I32 [61, 47, 3] and
  pipeline.output I32 [16, 16, 3] = CenterCrop(16)(Resize(20, BILINEAR)(image)).
"""
import os
import tempfile

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import InterpolationMode

from fixture_io import write_fixture


def f32(value):
    """A Python float holding the float32 nearest to value (what the C++ side reads back)."""
    return float(torch.tensor(value, dtype=torch.float32).item())


def _meta(extra=None):
    meta = {"torchvision_version": torchvision.__version__,
            "pil_version": Image.__version__}
    meta.update(extra or {})
    return meta


# --- (1) ImageFolder's class and sample order --------------------------------------------

# Class folders: ".hidden_class" < "B" < "Z9" < "_x" < "a" < "c.jpg" < "ä" by code point
# (a case-insensitive or locale sort would put "a" first, or "_x" before "B").
FOLDER_FILES = [
    # A file at the root is not a class; both are ignored.
    "root.jpg",
    "notes.txt",
    # Hidden class folder: torchvision takes it like any other.
    ".hidden_class/h.jpg",
    # Upper-case extension, upper-case name sorting before lower-case.
    "B/b1.jpg",
    "B/B2.JPG",
    # Numeric-looking names sort as text: "09" < "10" < "9".
    "Z9/9.png",
    "Z9/10.png",
    "Z9/09.PNG",
    "Z9/deep/deeper/11.bmp",
    # Every extension torchvision takes, in various cases, and some it does not.
    "_x/p.webp",
    "_x/q.tiff",
    "_x/r.pgm",
    "_x/s.ppm",
    "_x/t.bmp",
    "_x/u.tif",
    "_x/v.TIFF",
    "_x/W.WebP",
    "_x/w.gif",       # not an image extension for torchvision
    "_x/x.jpe",       # nor this
    "_x/y.jpg.bak",   # nor this
    # Folder-path sort of the walk: "a" < "a/X" < "a/d.jpg" < "a/x" < "a/x-y" < "a/x.y" <
    # "a/x/z" ('-' and '.' sort before '/'), so a/x/z comes after its siblings x-y and x.y.
    "a/z.jpeg",
    "a/Y.JpEg",
    "a/x-y/1.jpg",
    "a/x/2.jpg",
    "a/x/z/3.png",
    "a/x.y/4.png",
    "a/X/6.jpg",
    "a/d.jpg/5.PNG",  # a folder named like an image: not a sample, its file is
    "a/e.png",
    "a/\u00e9.png",   # e-acute sorts after every ASCII name
    "a/notjpg",       # "jpg" without the dot: ignored
    "a/readme.txt",
    "a/noext",
    "a/img.jpg.txt",  # ignored
    "a/img.txt.jpg",  # taken
    "a/.h.jpg",       # hidden file: taken
    "a/.jpg",         # a name that is only the extension: taken
    # A class folder named like an image.
    "c.jpg/c.png",
    # Non-ASCII class name, with a sub-folder.
    "\u00e4/a.jpg",
    "\u00e4/sub/b.jpg",
]
FOLDER_DIRS = [
    "a/empty",
    "B/empty.jpg",   # an empty folder named like an image: not a sample
    "\u00e4/sub/empty",
]


def _never_load(path):
    raise AssertionError(f"ImageFolder opened {path} at construction")


def _folder_rule(out_dir, seed):
    with tempfile.TemporaryDirectory(prefix="mb_image_folder_") as root:
        for rel in FOLDER_DIRS:
            os.makedirs(os.path.join(root, rel), exist_ok=True)
        for rel in FOLDER_FILES:
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb"):
                pass
        dataset = ImageFolder(root, loader=_never_load)
        classes = list(dataset.classes)
        samples = [os.path.relpath(path, root) for path, _ in dataset.samples]
        labels = [label for _, label in dataset.samples]
        assert labels == list(dataset.targets)
    path = os.path.join(out_dir, "images_folder_rule.safetensors")
    size = write_fixture(
        path, {"labels": torch.tensor(labels, dtype=torch.int32)}, "images_folder_rule", seed,
        _meta({"files": FOLDER_FILES, "dirs": FOLDER_DIRS, "classes": classes,
               "samples": samples, "extensions": list(IMG_EXTENSIONS)}))
    return [(os.path.basename(path), size)]


# --- (2) RandomResizedCrop.get_params, fallback branch ----------------------------------

RRC_SIZES = [(375, 500), (500, 375), (100, 1000), (1000, 100), (224, 224), (33, 47), (47, 33),
             (7, 5)]
RRC_RATIOS = [(3 / 4, 4 / 3), (1 / 2, 2.0), (0.9, 1.1), (1.5, 3.0)]
# Cases where w / ratio or h * ratio lands exactly on .5: Python's round() goes to even.
RRC_TIES = [((10, 5), (2.0, 3.0)),     # h = round(2.5) = 2
            ((3, 20), (0.5, 1.5)),     # w = round(4.5) = 4
            ((5, 20), (0.5, 2.5)),     # w = round(12.5) = 12
            ((14, 3), (2.0, 4.0))]     # h = round(1.5) = 2
RRC_SCALE = (1.5, 2.0)


def _rrc_fallback(out_dir, seed):
    cases = [(hw, r) for hw in RRC_SIZES for r in RRC_RATIOS] + RRC_TIES
    params, boxes = [], []
    scale = [f32(RRC_SCALE[0]), f32(RRC_SCALE[1])]
    for k, ((height, width), ratio) in enumerate(cases):
        ratio = [f32(ratio[0]), f32(ratio[1])]
        image = torch.zeros(3, height, width)
        answers = set()
        for trial in range(3):  # the fallback draws nothing that matters: same box any seed
            torch.manual_seed(seed + 1000 * k + trial)
            answers.add(tuple(int(v) for v in
                              T.RandomResizedCrop.get_params(image, scale, ratio)))
        assert len(answers) == 1, f"case {k}: not in the fallback branch: {answers}"
        params.append([height, width, scale[0], scale[1], ratio[0], ratio[1]])
        boxes.append(list(answers.pop()))
    path = os.path.join(out_dir, "images_rrc_fallback.safetensors")
    size = write_fixture(
        path, {"params": torch.tensor(params, dtype=torch.float64),
               "boxes": torch.tensor(boxes, dtype=torch.int32)},
        "images_rrc_fallback", seed, _meta({"cases": len(cases)}))
    return [(os.path.basename(path), size)]


# --- (3) resized_crop (+ hflip) on PIL, bilinear -----------------------------------------

def _test_image(height, width, gen):
    """Smooth gradients, seeded noise and a sharp vertical edge, as uint8 RGB [H, W, 3]."""
    y = torch.linspace(0.0, 1.0, height).reshape(height, 1).expand(height, width)
    x = torch.linspace(0.0, 1.0, width).reshape(1, width).expand(height, width)
    r = 30 + 200 * x
    g = 20 + 210 * y
    b = 128 + 90 * torch.sin(6.0 * x + 4.0 * y)
    image = torch.stack([r, g, b], dim=-1)
    image = image + torch.randint(-12, 13, (height, width, 3), generator=gen).to(image.dtype)
    edge = width * 5 // 8
    image[:, edge:, 0] = 250.0 - image[:, edge:, 0] * 0.2   # sharp step in red
    image[height // 3, :, 1] = 0.0                           # a dark one-pixel line in green
    return image.round().clamp(0, 255).to(torch.uint8)


# (name, image (H, W), box (top, left, height, width), output (h, w), flip)
RESIZED_CROP_CASES = [
    ("downscale_2.7x", (41, 35), (2, 1, 38, 32), (14, 12), 0),
    ("downscale_2x_whole_image", (24, 50), (0, 0, 24, 50), (12, 25), 1),
    ("upscale_10x13_to_24x24", (17, 23), (4, 6, 10, 13), (24, 24), 0),
    ("non_square_output", (48, 36), (4, 6, 40, 24), (10, 20), 1),
    ("box_at_bottom_right_edges", (33, 29), (13, 9, 20, 20), (7, 9), 0),
    ("box_one_pixel_wide", (20, 40), (3, 17, 15, 1), (10, 6), 1),
    ("identity_inner_box", (17, 23), (2, 3, 12, 15), (12, 15), 0),
    ("identity_whole_flip", (23, 17), (0, 0, 23, 17), (23, 17), 1),
    ("downscale_6x", (40, 32), (1, 1, 38, 30), (6, 5), 0),
]


def _resized_crop(out_dir, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for k, (_, (height, width), box, out, flip) in enumerate(RESIZED_CROP_CASES):
        pixels = _test_image(height, width, gen)
        image = Image.fromarray(pixels.numpy(), mode="RGB")
        result = F.resized_crop(image, box[0], box[1], box[2], box[3], list(out),
                                InterpolationMode.BILINEAR)
        if flip:
            result = F.hflip(result)
        output = torch.from_numpy(np.array(result, dtype=np.uint8))
        assert output.shape == (out[0], out[1], 3), output.shape
        tensors[f"case{k}.image"] = pixels.to(torch.int32)
        tensors[f"case{k}.box"] = torch.tensor(box, dtype=torch.int32)
        tensors[f"case{k}.size"] = torch.tensor(out, dtype=torch.int32)
        tensors[f"case{k}.flip"] = torch.tensor([flip], dtype=torch.int32)
        tensors[f"case{k}.output"] = output.to(torch.int32)
    path = os.path.join(out_dir, "images_resized_crop.safetensors")
    size = write_fixture(path, tensors, "images_resized_crop", seed,
                         _meta({"cases": len(RESIZED_CROP_CASES),
                                "names": [c[0] for c in RESIZED_CROP_CASES]}))
    return [(os.path.basename(path), size)]


# --- (4) Resize(S) + CenterCrop(C) ---------------------------------------------------------

# (H, W, S); C is 224 for S = 256 and 16 for S = 20.
EVAL_CASES = [
    (375, 500, 256), (500, 375, 256), (333, 500, 256), (500, 500, 256), (256, 256, 256),
    (257, 1023, 256), (1023, 257, 256), (300, 299, 256), (299, 300, 256),
    (375, 500, 20), (61, 47, 20), (47, 61, 20), (20, 33, 20), (19, 40, 20), (23, 23, 20),
]
EVAL_CROP = {256: 224, 20: 16}


def _center_crop_box(height, width, crop):
    index = torch.arange(height * width).reshape(1, height, width)
    cropped = F.center_crop(index, [crop, crop])
    assert tuple(cropped.shape) == (1, crop, crop)
    v = int(cropped[0, 0, 0])
    return [v // width, v % width, crop, crop]


def _eval_resize(out_dir, seed):
    sizes, resize, resized, crops, boxes = [], [], [], [], []
    for height, width, s in EVAL_CASES:
        out = F.resize(Image.new("RGB", (width, height)), s, InterpolationMode.BILINEAR)
        out_w, out_h = out.size
        crop = EVAL_CROP[s]
        sizes.append([height, width])
        resize.append(s)
        resized.append([out_h, out_w])
        crops.append(crop)
        boxes.append(_center_crop_box(out_h, out_w, crop))
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = _test_image(61, 47, gen)
    pipeline = T.Compose([T.Resize(20, InterpolationMode.BILINEAR), T.CenterCrop(16)])
    output = torch.from_numpy(np.array(pipeline(Image.fromarray(pixels.numpy(), mode="RGB")),
                                       dtype=np.uint8))
    assert output.shape == (16, 16, 3), output.shape
    tensors = {
        "sizes": torch.tensor(sizes, dtype=torch.int32),
        "resize": torch.tensor(resize, dtype=torch.int32),
        "resized": torch.tensor(resized, dtype=torch.int32),
        "crop": torch.tensor(crops, dtype=torch.int32),
        "crop_boxes": torch.tensor(boxes, dtype=torch.int32),
        "pipeline.image": pixels.to(torch.int32),
        "pipeline.output": output.to(torch.int32),
    }
    path = os.path.join(out_dir, "images_eval_resize.safetensors")
    size = write_fixture(path, tensors, "images_eval_resize", seed,
                         _meta({"cases": len(EVAL_CASES), "pipeline_resize": 20,
                                "pipeline_crop": 16}))
    return [(os.path.basename(path), size)]


def _to_tensor_normalize(out_dir, seed):
    """ToTensor + Normalize (ImageNet constants) of every 8-bit value in every channel: what
    kernels/image_input.h computes on the device, in float32 as torchvision does."""
    values = torch.arange(256, dtype=torch.uint8).repeat(3, 1).reshape(3, 16, 16)
    image = Image.fromarray(values.permute(1, 2, 0).numpy(), mode="RGB")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    output = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(image)
    assert output.dtype == torch.float32 and output.shape == (3, 16, 16)
    tensors = {"input": values.to(torch.int32), "output": output}
    path = os.path.join(out_dir, "images_to_tensor_normalize.safetensors")
    size = write_fixture(path, tensors, "images_to_tensor_normalize", seed,
                         _meta({"mean": [f32(m) for m in mean], "std": [f32(v) for v in std]}))
    return [(os.path.basename(path), size)]


def generate(out_dir, seed):
    torch.manual_seed(seed)
    return (_folder_rule(out_dir, seed) + _rrc_fallback(out_dir, seed) +
            _resized_crop(out_dir, seed) + _eval_resize(out_dir, seed) +
            _to_tensor_normalize(out_dir, seed))
