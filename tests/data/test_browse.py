import math

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.browse import (BACKGROUND, LABEL_H, LEGEND_ENTRY_W, LEGEND_ROW_H, browse, contact_sheet,
                                   default_columns, thumbnail)
from pixelwise.data.io import default_palette, overlay
from pixelwise.errors import DataError

PALETTE = default_palette(3)
NAMES = ("background", "cat", "dog")


def _flat(colour, size=(32, 32), label=1):
    """A constant-colour image (h, w) and a constant mask."""
    h, w = size
    return np.full((h, w, 3), colour, dtype=np.uint8), np.full((h, w), label, dtype=np.int64)


def _sheet(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _legend_h(entries, width):
    per_row = max(1, width // LEGEND_ENTRY_W)
    return math.ceil(entries / per_row) * LEGEND_ROW_H


@pytest.mark.parametrize("count,columns", [(1, 1), (5, 2), (6, 3), (7, None)])
def test_sheet_size_follows_cells_and_columns(tmp_path, count, columns):
    items = [(*_flat((10 * i, 0, 0)), f"im{i}") for i in range(count)]
    out = contact_sheet(items, PALETTE, NAMES, tmp_path / "sheet.png", columns=columns, cell=64)
    cols = columns or 3  # seven items: ceil(sqrt(7)) = 3 columns
    rows = math.ceil(count / cols)
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (cols * 64, _legend_h(3, cols * 64) + rows * (64 + LABEL_H))


def test_default_columns():
    assert [default_columns(n) for n in (1, 2, 4, 5, 64, 500)] == [1, 2, 2, 3, 8, 10]


def test_cell_pixels_are_the_overlay_of_their_image(tmp_path):
    colour, label = (200, 100, 50), 2
    wide = _flat(colour, size=(32, 64), label=label)  # 64 wide, 32 high: letterboxed in a square cell
    items = [(*_flat((0, 0, 0), label=0), "first"), (*wide, "second")]
    sheet = _sheet(contact_sheet(items, PALETTE, NAMES, tmp_path / "s.png", columns=2, cell=128))
    top = _legend_h(3, 256)
    expected = overlay(*wide, PALETTE)[0, 0]
    assert expected.tolist() == [round(0.5 * c + 0.5 * p) for c, p in zip(colour, PALETTE[label])]
    # the second cell starts at x=128; the thumbnail is 128x64, centred: rows 32..95 of the cell
    cell = sheet[top: top + 128, 128:256]
    assert (cell[32:96] == expected).all()
    assert (cell[:32] == BACKGROUND).all() and (cell[96:] == BACKGROUND).all()


def test_mask_is_scaled_with_nearest_labels(tmp_path):
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    mask = np.array([[0, 0, 1, 1]] * 4)
    small, labels = thumbnail(image, mask, 8)
    assert labels.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]] * 8
    assert small.shape == (8, 8, 3)


def test_legend_holds_every_class_colour(tmp_path):
    palette = PALETTE.copy()
    palette[:3] = [(11, 22, 33), (44, 55, 66), (77, 88, 99)]
    out = contact_sheet([(*_flat((0, 0, 0), label=0), "x")], palette, NAMES, tmp_path / "s.png", cell=600,
                        ignore_index=255)
    legend = _sheet(out)[: _legend_h(4, 600)].reshape(-1, 3)
    colours = {tuple(c) for c in legend.tolist()}
    for k in range(3):
        assert tuple(palette[k].tolist()) in colours
    assert tuple(palette[255].tolist()) in colours  # the ignore swatch


def test_caption_text_is_drawn_under_the_thumbnail(tmp_path):
    item = _flat((0, 0, 0), label=0)
    plain = _sheet(contact_sheet([(*item, "a")], PALETTE, NAMES, tmp_path / "1.png", cell=64))
    captioned = _sheet(contact_sheet([(*item, "a\nIoU 0.53")], PALETTE, NAMES, tmp_path / "2.png", cell=64))
    top = _legend_h(3, 64)
    strip = slice(top + 64, top + 64 + LABEL_H)
    assert (plain[: top + 64] == captioned[: top + 64]).all()  # text stays out of the image
    assert (plain[strip] != captioned[strip]).any()


def test_empty_sheet_is_refused(tmp_path):
    with pytest.raises(DataError, match="no images"):
        contact_sheet([], PALETTE, NAMES, tmp_path / "s.png")


def _coloured_dataset(root):
    """Three 16x16 images, each one flat colour, with all-background masks."""
    colours = {"a": (250, 0, 0), "b": (0, 250, 0), "c": (0, 0, 250)}
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, colour in colours.items():
        Image.fromarray(np.full((16, 16, 3), colour, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(root / "masks" / f"{stem}.png")
    (root / "classes.txt").write_text("background\nthing\n")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\nb\nc\n")
    return colours


def _first_cell_colour(path, columns, cell):
    sheet = _sheet(path)
    top = _legend_h(3, columns * cell)  # two classes + ignore
    return tuple(sheet[top + cell // 2, cell // 2].tolist())


def test_order_changes_which_image_is_first(tmp_path):
    root = tmp_path / "ds"
    colours = _coloured_dataset(root)
    palette = default_palette(2)

    def shown(colour):  # what an all-background pixel of that colour becomes
        return tuple(overlay(np.array([[colour]], dtype=np.uint8), np.zeros((1, 1)), palette)[0, 0].tolist())

    plain = browse(root, tmp_path / "plain.png", cell=32)
    assert _first_cell_colour(plain, 2, 32) == shown(colours["a"])
    worst = browse(root, tmp_path / "worst.png", order=["c", "a"], captions={"c": "IoU 0.10"}, cell=32)
    assert _first_cell_colour(worst, 2, 32) == shown(colours["c"])
    limited = browse(root, tmp_path / "one.png", order=["b"], limit=1, cell=32)
    assert Image.open(limited).size == (32, _legend_h(3, 32) + 32 + LABEL_H)
    assert _first_cell_colour(limited, 1, 32) == shown(colours["b"])


def test_browse_errors_name_the_problem(tmp_path):
    root = tmp_path / "ds"
    _coloured_dataset(root)
    with pytest.raises(DataError, match="'zz'"):
        browse(root, tmp_path / "s.png", order=["zz"])
    with pytest.raises(DataError, match="no 'val' split"):
        browse(root, tmp_path / "s.png", split="val")
    Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(root / "masks" / "b.png")
    with pytest.raises(DataError, match=r"b.png is 16x8 but its image .*b.png is 16x16"):
        browse(root, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_browse_the_bundled_sample(tmp_path, nuclei_root):
    out = browse(nuclei_root, tmp_path / "sub" / "sheet.png", split="train", limit=4, cell=48)
    with Image.open(out) as img:
        assert img.size == (2 * 48, _legend_h(3, 96) + 2 * (48 + LABEL_H))
