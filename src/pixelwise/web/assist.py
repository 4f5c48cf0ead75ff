"""The model beside the annotator: pre-filled masks, the pixels it is unsure of, and what to label next.

Uses `pixelwise.inference` only; a new checkpoint (from a retrain) is swapped in with `switch`.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from pixelwise.checkpoint import class_differences
from pixelwise.errors import DataError
from pixelwise.inference.predict import Predictor, load
from pixelwise.inference.tiling import class_argmax
from pixelwise.inference.uncertainty import pixel_margin, rank_by_uncertainty

UNSURE_MARGIN = 0.2  # top-1 minus top-2 probability below this: the model hesitates, a person should look
MIN_REGION = 16  # unsure specks smaller than this are outlined but not worth a jump of the view


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # HxW uint8, exactly Predictor.predict
    unsure: np.ndarray  # HxW uint8, 1 where the margin is below the threshold
    regions: list[list[int]]  # [x0, y0, x1, y1, pixels] of unsure regions (x1, y1 exclusive), largest first


def unsure_regions(unsure: np.ndarray, min_pixels: int = MIN_REGION, limit: int = 500) -> list[list[int]]:
    """Connected unsure areas (8-connected) as bounding boxes with their pixel counts, largest first."""
    ids, count = ndimage.label(unsure, structure=np.ones((3, 3)))
    if not count:
        return []
    sizes = np.bincount(ids.reshape(-1), minlength=count + 1)
    boxes = [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop, int(sizes[i + 1])]
             for i, sl in enumerate(ndimage.find_objects(ids))]
    boxes = [b for b in boxes if b[4] >= min_pixels]
    return sorted(boxes, key=lambda b: -b[4])[:limit]


class Assistant:
    """A checkpoint's predictions for an annotation session. Thread-safe; one forward pass at a time."""

    def __init__(self, checkpoint: str | Path, class_names, threshold: float = UNSURE_MARGIN,
                 loader: Callable[[Path], Predictor] = load, keep: int = 8):
        self.class_names, self.threshold, self.loader, self.keep = list(class_names), threshold, loader, keep
        self._model_lock = threading.Lock()  # torch already uses every core; two passes at once only thrash
        self._asking = 0  # requests waiting for the model: the background ranking lets them go first
        self._asking_lock = threading.Lock()
        self._cache: OrderedDict[Path, Prediction] = OrderedDict()
        self.switch(checkpoint)

    def switch(self, checkpoint: str | Path) -> None:
        """Predict with another checkpoint from now on (a retrain's best.pt); its classes must be the dataset's."""
        predictor = self.loader(Path(checkpoint))
        diffs = class_differences(predictor.class_names, self.class_names)
        if diffs:
            raise DataError(f"{checkpoint} was trained on other classes than this dataset's: " + "; ".join(diffs))
        with self._model_lock:
            self.predictor, self.checkpoint = predictor, Path(checkpoint)
            self._cache.clear()

    def predict(self, image: Path) -> Prediction:
        """The model's labels for an image (Predictor.predict's, from the same single forward pass) and
        where it is unsure."""
        self._count_asking(+1)
        try:
            with self._model_lock:
                if image in self._cache:
                    self._cache.move_to_end(image)
                    return self._cache[image]
                logits = self.predictor.logits(image)
                labels = class_argmax(logits)
                unsure = (pixel_margin(logits.softmax(0).numpy()) < self.threshold).astype(np.uint8)
                result = Prediction(labels, unsure, unsure_regions(unsure))
                self._cache[image] = result
                while len(self._cache) > self.keep:
                    self._cache.popitem(last=False)
                return result
        finally:
            self._count_asking(-1)

    def _count_asking(self, change: int) -> None:
        with self._asking_lock:
            self._asking += change

    def rank(self, images: list[Path]) -> list[Path]:
        """Images in the order to label them (rank_by_uncertainty at its default measure: the most
        uncertain image of each kind of scene first)."""
        def proba_of(path: Path) -> np.ndarray:
            while self._asking:  # the image a person is waiting for goes before the background ranking
                time.sleep(0.02)
            with self._model_lock:
                return self.predictor.predict_proba(path)

        return [path for path, _ in rank_by_uncertainty(proba_of, images)]
