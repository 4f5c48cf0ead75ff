"""Joint transforms on (image, mask) pairs.

Images are float tensors (3, H, W) in 0..1, masks are int64 (H, W). Masks are resized with nearest
neighbour, so labels never blend, and padded with the ignore index, so padding never counts in the loss.
Random transforms draw from the `rng` they are given (a `random.Random`; the module's global one by
default), so a dataset can give each sample its own seeded stream.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

Pair = tuple[torch.Tensor, torch.Tensor]


def to_tensors(image: np.ndarray, mask: np.ndarray) -> Pair:
    """HxWx3 uint8, HxW int -> (3, H, W) float in 0..1, (H, W) int64."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return img, torch.from_numpy(np.asarray(mask, dtype=np.int64))


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> Pair:
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    # float64 holds every int32 label exactly; float32 would turn 16777217 into 16777216
    mask = F.interpolate(mask[None, None].double(), size=size, mode="nearest")[0, 0].long()
    return image, mask


class Compose:
    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, image, mask, rng=random):
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def at_resolution(self, factor: float) -> None:
        """Every later sample at `factor` times the resolution: the scales drawn and the crop shrink
        together, so a crop shows as much of the scene at a fraction of the pixels (a cheap early phase)."""
        for t in self.transforms:
            if hasattr(t, "resolution"):
                t.resolution = factor


class RandomScale:
    """Resize by a factor drawn uniformly from `scale_range`: objects appear at many sizes."""

    def __init__(self, scale_range: tuple[float, float]):
        self.scale_range = scale_range
        self.resolution = 1.0

    def __call__(self, image, mask, rng=random):
        s = rng.uniform(*self.scale_range) * self.resolution
        h, w = image.shape[-2:]
        return resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


class PadTo:
    """Pad bottom/right up to at least `size`; image with 0, mask with the ignore index."""

    def __init__(self, size: tuple[int, int], ignore_index: int):
        self.size, self.ignore_index = size, ignore_index

    def __call__(self, image, mask, rng=None):
        h, w = image.shape[-2:]
        ph, pw = max(0, self.size[0] - h), max(0, self.size[1] - w)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
        return image, mask


class RandomCrop:
    def __init__(self, size: tuple[int, int], ignore_index: int):
        self.full_size, self.ignore_index = size, ignore_index
        self.resolution = 1.0

    @property
    def size(self) -> tuple[int, int]:
        return tuple(max(1, round(side * self.resolution)) for side in self.full_size)

    def __call__(self, image, mask, rng=random):
        size = self.size
        image, mask = PadTo(size, self.ignore_index)(image, mask)
        h, w = image.shape[-2:]
        top, left = rng.randint(0, h - size[0]), rng.randint(0, w - size[1])
        window = (slice(top, top + size[0]), slice(left, left + size[1]))
        return image[:, window[0], window[1]], mask[window[0], window[1]]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, mask, rng=random):
        if rng.random() < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


class RandomDihedral:
    """A vertical flip and a turn by a multiple of 90 degrees, each drawn at random: free data for
    images with no "up" (microscopy, aerial tiles). Applied before the crop, which turned images
    may need padded differently."""

    def __call__(self, image, mask, rng=random):
        if rng.random() < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        turns = rng.randrange(4)
        return image.rot90(turns, (-2, -1)), mask.rot90(turns, (-2, -1))


class ColorJitter:
    """Mild brightness/contrast changes; geometry and labels are untouched."""

    def __init__(self, strength: float = 0.2):
        self.strength = strength

    def __call__(self, image, mask, rng=random):
        if self.strength <= 0:
            return image, mask
        brightness = 1 + rng.uniform(-self.strength, self.strength)
        contrast = 1 + rng.uniform(-self.strength, self.strength)
        mean = image.mean()
        return ((image - mean) * contrast + mean * brightness).clamp_(0, 1), mask


class ColourCast:
    """Another day's light or another camera: each channel scaled by its own gain, and the saturation
    changed, each by up to `strength`."""

    def __init__(self, strength: float = 0.2):
        self.strength = strength

    def __call__(self, image, mask, rng=random):
        gains = torch.tensor([1 + rng.uniform(-self.strength, self.strength) for _ in range(3)]).view(3, 1, 1)
        saturation = 1 + rng.uniform(-self.strength, self.strength)
        grey = image.mean(0, keepdim=True)
        return ((grey + (image - grey) * saturation) * gains).clamp_(0, 1), mask


def train_transform(crop_size: tuple[int, int], scale_range: tuple[float, float], ignore_index: int,
                    jitter: float = 0.0, top_down: bool = False, colour: float = 0.0) -> Compose:
    turns = (RandomDihedral(),) if top_down else ()
    cast = (ColourCast(colour),) if colour > 0 else ()
    return Compose(RandomScale(scale_range), *turns, RandomCrop(crop_size, ignore_index), RandomHorizontalFlip(),
                   ColorJitter(jitter), *cast)


# ---------------------------------------------------------------- which augmentation the data allows

AUGMENTS = ("auto", "upright", "top-down")
# Share of labelled pixels that would change halves if the masks were turned upside down. Street scenes
# (sky above, road below) sit near the top of the range, the nuclei sample near 0: images with an "up"
# are far apart from images without one, and the threshold sits between them, nearer the top-down side
# (the measured values are in docs/training.md).
TOP_DOWN_BELOW = 0.15


def vertical_asymmetry(masks, num_classes: int) -> float:
    """sum over classes |pixels in the top half - pixels in the bottom half| / labelled pixels, over `masks`."""
    halves = np.zeros((2, num_classes), dtype=np.int64)
    for mask in masks:
        mask = np.asarray(mask)
        h = mask.shape[0]
        for half, rows in enumerate((mask[: h // 2], mask[h - h // 2:])):
            labelled = rows[rows < num_classes]
            halves[half] += np.bincount(labelled.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
    total = halves.sum()
    return float(np.abs(halves[0] - halves[1]).sum() / total) if total else 0.0


def resolve_augment(choice: str, masks, num_classes: int, log=print) -> str:
    """`auto` -> "top-down" when the training labels sit as often in the bottom half of an image as in the top,
    else "upright"; logged with the measured figure. Other choices pass through."""
    if choice not in AUGMENTS:
        raise ValueError(f"unknown augmentation {choice!r}; choose one of {', '.join(AUGMENTS)}")
    if choice != "auto":
        return choice
    asymmetry = vertical_asymmetry(masks, num_classes)
    if asymmetry < TOP_DOWN_BELOW:
        log(f"augment auto: top-down (the labels' vertical asymmetry is {asymmetry:.2f}, below {TOP_DOWN_BELOW}: "
            "the images have no up) -> vertical flips and 90-degree turns as well")
        return "top-down"
    log(f"augment auto: upright (the labels' vertical asymmetry is {asymmetry:.2f}, at least {TOP_DOWN_BELOW}: "
        "the images have an up) -> horizontal flips only")
    return "upright"
