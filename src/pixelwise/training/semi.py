"""Learning from unlabelled images (`pixelwise train --unlabelled`), two ways (`--semi`):

consistency (per step): weak-to-strong consistency with confident pseudo-labels (FixMatch, UniMatch).
self-training (offline, ST++): the first TEACHER_SHARE of the run trains on the labelled images alone;
then the model labels the whole pool once, as `--profile accurate` would predict it, and the rest of the
run trains on the labelled and the pseudo-labelled images together, each step as cheap as a supervised
one. The labelled images are repeated to about LABELLED_SHARE of each epoch, and the pseudo-labelled ones
are seen in another light (`strong_view`).

Consistency in detail:

Each step the teacher (the model itself in eval mode, or its moving average under --ema) labels a
weakly augmented view of an unlabelled batch: the crop and flip of the labelled recipe. Pixels whose top
class has probability of at least `threshold` become pseudo-labels. The student learns them from a
strongly augmented view of the same pixels: another light (colour jitter, grey), blur, and CutMix, a
box pasted from another image of the batch, pseudo-labels and all. Geometry is shared by both views, so a
pseudo-label stays on its pixel.

Strong augmentation runs on the batch tensor, drawn from a generator seeded by (seed, epoch, step, rank):
a resumed or multi-process run draws the same views.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pixelwise.data.io import read_image, write_atomic, write_label_png
from pixelwise.data.transforms import to_tensors
from pixelwise.errors import DataError, PixelwiseError

from pixelwise.runtime import autocast, to_device

THRESHOLD = 0.95  # confidence a pseudo-label needs (UniMatch's for CamVid-sized label sets)
UNLABELLED_WEIGHT = 1.0  # the unsupervised loss's weight beside the supervised one


def step_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + step) * 64 + rank)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def recolour(images: torch.Tensor, generator: torch.Generator, strength: float = 0.5) -> torch.Tensor:
    """Brightness, contrast, saturation and per-channel gain, each drawn per image within `strength`, then
    one image in five turned grey: the light and camera of another day."""
    n = images.shape[0]
    view = (n, 1, 1, 1)
    brightness = _uniform(n, 1 - strength, 1 + strength, generator).view(view)
    contrast = _uniform(n, 1 - strength, 1 + strength, generator).view(view)
    saturation = _uniform(n, 1 - strength, 1 + strength, generator).view(view)
    gains = _uniform(3 * n, 1 - strength / 2, 1 + strength / 2, generator).view(n, 3, 1, 1)
    grey_out = (torch.rand(n, generator=generator) < 0.2).view(view)
    grey = images.mean(1, keepdim=True)
    images = grey + (images - grey) * saturation
    mean = images.mean((1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean * brightness) * gains
    images = torch.where(grey_out, images.mean(1, keepdim=True).expand_as(images), images)
    return images.clamp(0, 1)


def blur(images: torch.Tensor, generator: torch.Generator, chance: float = 0.5) -> torch.Tensor:
    """A 5x5 Gaussian blur (sigma 0.1-2.0, drawn per image) on about half the images."""
    n = images.shape[0]
    sigma = _uniform(n, 0.1, 2.0, generator)
    chosen = torch.rand(n, generator=generator) < chance
    taps = torch.arange(-2, 3, dtype=images.dtype)
    kernels = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # (n, 5)
    out = images.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        k = kernels[i]
        image = images[i:i + 1].transpose(0, 1)  # channels as a batch: one kernel for all three
        image = F.conv2d(F.pad(image, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
        image = F.conv2d(F.pad(image, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
        out[i] = image.transpose(0, 1)[0]
    return out


def cutmix_boxes(n: int, height: int, width: int, generator: torch.Generator, chance: float = 0.5) -> torch.Tensor:
    """(n, H, W) bool: for about half the images a box covering 2-40% of the image (aspect 0.3-3.3) that is
    pasted from the next image of the batch; elsewhere all False."""
    boxes = torch.zeros(n, height, width, dtype=torch.bool)
    for i in range(n):
        area = float(_uniform(1, 0.02, 0.4, generator)) * height * width
        aspect = float(torch.exp(_uniform(1, -1.2, 1.2, generator)))
        if float(torch.rand(1, generator=generator)) >= chance:
            continue
        h = min(height, max(1, round((area / aspect) ** 0.5)))
        w = min(width, max(1, round((area * aspect) ** 0.5)))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        boxes[i, top:top + h, left:left + w] = True
    return boxes


def paste(images_or_labels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inside each image's box, the next image's content (image n-1 takes from image 0)."""
    donor = images_or_labels.roll(-1, dims=0)
    mask = boxes if images_or_labels.dim() == 3 else boxes[:, None]
    return torch.where(mask.to(images_or_labels.device), donor, images_or_labels)


@torch.no_grad()
def pseudo_labels(teacher: torch.nn.Module, weak: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's classes on the weak views and where it is at least `threshold` sure: (N, H, W) long, bool.
    The teacher runs in eval mode: BatchNorm uses its running statistics and auxiliary heads stay off."""
    was_training = teacher.training
    teacher.eval()
    try:
        probabilities = teacher(weak).float().softmax(1)
    finally:
        teacher.train(was_training)
    confidence, labels = probabilities.max(1)
    return labels, confidence >= threshold


def strong_views(weak: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor, generator: torch.Generator):
    """Strong views of the weak batch (on the CPU, where the generator draws) and the pseudo-labels that go
    with them: CutMix moves both."""
    strong = blur(recolour(weak, generator), generator)
    boxes = cutmix_boxes(weak.shape[0], weak.shape[-2], weak.shape[-1], generator)
    return paste(strong, boxes), paste(labels, boxes), paste(confident, boxes)


def consistency_loss(logits: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's strong-view logits against the pseudo-labels, over the confident
    pixels, divided by all pixels: as the teacher grows sure of more pixels, the loss grows with it."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return (losses * confident).sum() / max(confident.numel(), 1)


class Consistency:
    """The unlabelled half of each training step: draws the next unlabelled batch, pseudo-labels its weak
    views with the teacher, and scores the student's logits on the strong views. Keeps the epoch's
    unsupervised loss, share of confident pixels, and the pool images that could not be read.

    The pool is walked in an order that is a function of (seed, epoch) on each rank's share of it
    (DistributedSampler), restarted with a new order when an epoch needs more batches than the pool holds:
    a resumed run takes the same batches as one that never stopped."""

    def __init__(self, loader, teacher: torch.nn.Module, seed: int, rank: int = 0, threshold: float = THRESHOLD,
                 weight: float = UNLABELLED_WEIGHT):
        self.loader, self.teacher, self.seed, self.rank = loader, teacher, seed, rank
        self.threshold, self.weight = threshold, weight
        self.unreadable: set[int] = set()
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.passes, self.iterator = epoch, 0, None
        self.loss_sum, self.confident_sum, self.steps = 0.0, 0.0, 0

    def _next(self):
        while True:
            if self.iterator is None:
                # epochs far apart in the sampler's numbering: each restart within an epoch gets a fresh order
                self.loader.sampler.set_epoch(self.epoch * 1000 + self.passes)
                self.loader.dataset.epoch = self.epoch * 1000 + self.passes
                self.iterator, self.passes = iter(self.loader), self.passes + 1
            try:
                return next(self.iterator)
            except StopIteration:
                self.iterator = None

    def views(self, step: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (strong views on the device, their pseudo-labels, where those are confident)."""
        weak, pixels, indices = self._next()
        self.unreadable.update(indices[~pixels.flatten(1).any(1)].tolist())
        with autocast(device, dtype):
            labels, confident = pseudo_labels(self.teacher, to_device(weak, device, dtype), self.threshold)
        confident &= pixels.to(device)  # never padding, never an image that could not be read
        generator = step_generator(self.seed, self.epoch, step, self.rank)
        strong, labels, confident = strong_views(weak, labels.cpu(), confident.cpu(), generator)
        return to_device(strong, device, dtype), labels.to(device), confident.to(device)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor) -> torch.Tensor:
        loss = consistency_loss(logits, labels, confident)
        self.loss_sum += float(loss.detach())
        self.confident_sum += float(confident.float().mean())
        self.steps += 1
        return self.weight * loss

    def epoch_stats(self) -> dict:
        steps = max(self.steps, 1)
        return {"unlabelled_loss": self.loss_sum / steps, "confident_share": self.confident_sum / steps}


# ---------------------------------------------------------------- offline self-training


def strong_view(image: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Self-training's view of one pseudo-labelled (3, H, W) image: consistency's light and blur, drawn from
    the sample's own `rng` (random.Random), so a resumed run draws the same. The geometry stays the
    transform's, which moved the pseudo-label with it. A model that learns its own guesses from the view it
    made them on learns little; from another light it must find what holds across lights (ST++)."""
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    return blur(recolour(image[None], generator), generator)[0]


SEMI_METHODS = ("consistency", "self-training")
TEACHER_SHARE = 0.5  # self-training: the share of the run that trains on the labelled images alone
LABELLED_SHARE = 0.5  # self-training, after the switch: the labelled images' share of each epoch
SELF_TRAINING_THRESHOLD = 0.0  # ST++ keeps every pixel's label; a higher bar leaves the unsure ones ignored
PSEUDO_LABELS = "pseudo_labels"  # in OUT: a mask a pool image, named by its place in the pool
MANIFEST = "pool.json"  # beside the masks: the pool they were made for, in order


def threshold_for(method: str, chosen: float | None) -> float:
    """The confidence a pseudo-label needs: `chosen` (--pseudo-threshold), else the method's own."""
    if chosen is not None:
        return chosen
    return SELF_TRAINING_THRESHOLD if method == "self-training" else THRESHOLD


def pseudo_label_file(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.png"


def write_manifest(folder: Path, pool: list[Path]) -> None:
    """A fresh folder for the pool's masks, naming the pool: masks are found by an image's place in it."""
    shutil.rmtree(folder, ignore_errors=True)  # masks of an earlier run in OUT are not this pool's
    folder.mkdir(parents=True)
    write_atomic(folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps([str(p) for p in pool], indent=0)))


def check_manifest(folder: Path, pool: list[Path]) -> None:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise PixelwiseError(f"{folder}: the pool's pseudo-labels are missing; they are part of the run (copy them "
                             "with last.pt), or start the run again")
    if json.loads(manifest.read_text()) != [str(p) for p in pool]:
        raise PixelwiseError(f"{manifest}: the masks were made for another pool than --unlabelled gives now (images "
                             "added, removed or renamed); resume with the same folders, or start the run again")


@torch.no_grad()
def pseudo_label_pool(engine, pool: list[Path], folder: Path, palette, ignore_index: int, indices,
                      threshold: float = 0.0, progress: bool = True) -> tuple[int, float, list[Path]]:
    """Offline self-training's labels (ST++): the teacher, as `engine` (its inference scale and flip, what
    `--profile accurate` predicts), labels every pool image at full resolution, pixels below `threshold`
    of confidence left as ignore; each mask goes to `folder` as a palette PNG, written atomically.
    `indices`: this rank's share of the pool. -> (masks written, share of confident pixels, unreadable)"""
    folder.mkdir(parents=True, exist_ok=True)
    written, confident, pixels, unreadable = 0, 0, 0, []
    for index in tqdm(indices, desc="pseudo-labelling", unit="img", leave=False, disable=not progress):
        try:
            image = read_image(pool[index])
        except DataError:  # streamed pools meet broken files late: skipped, listed at the end
            unreadable.append(pool[index])
            continue
        probabilities = engine.logits(to_tensors(image, image[..., 0])[0][None]).float().softmax(1)[0]
        best, labels = probabilities.max(0)
        sure = best >= threshold
        labels = torch.where(sure, labels, torch.full_like(labels, ignore_index)).to(torch.uint8).cpu().numpy()
        write_label_png(pseudo_label_file(folder, index), labels, palette)
        written, confident, pixels = written + 1, confident + int(sure.sum()), pixels + sure.numel()
    return written, confident / max(pixels, 1), unreadable
