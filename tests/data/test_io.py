import numpy as np
import pytest
from PIL import Image

from pixelwise.data.io import overlay, read_image, read_mask, write_label_png, default_palette
from pixelwise.errors import DataError


def test_grey_palette_and_rgba_images_become_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    assert (read_image(tmp_path / "l.png") == grey[:, :, None]).all()

    p = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").tolist() == [[[10, 20, 30], [200, 100, 50]]]

    rgba = np.array([[[100, 150, 200, 255], [100, 150, 200, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    # opaque pixel kept, transparent pixel composited onto black
    assert read_image(tmp_path / "a.png").tolist() == [[[100, 150, 200], [0, 0, 0]]]


def test_16_bit_image_is_stretched_to_its_own_range(tmp_path):
    arr = np.array([[1000, 2000], [3000, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = read_image(tmp_path / "deep.png")
    assert out[:, :, 0].tolist() == [[0, 128], [255, 0]]
    assert (out[:, :, 0] == out[:, :, 2]).all()


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # stored 40 wide x 20 high, EXIF orientation 6 = display rotated 90° clockwise
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = 255  # left half white
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "phone.jpg")
    assert out.shape == (40, 20, 3)
    # the stored left half ends up on top after a clockwise turn
    assert out[:20].mean() > 200 and out[20:].mean() < 50


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        read_image(bad)


def test_colour_mask_is_refused_but_grey_rgb_mask_is_read(tmp_path):
    Image.fromarray(np.array([[[1, 1, 1], [2, 2, 2]]], dtype=np.uint8)).save(tmp_path / "grey.png")
    assert read_mask(tmp_path / "grey.png").tolist() == [[1, 2]]
    Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour.png: mask is a colour"):
        read_mask(tmp_path / "colour.png")


def test_label_png_roundtrip_keeps_indices_and_palette(tmp_path):
    labels = np.array([[0, 1], [2, 11]], dtype=np.uint8)
    palette = default_palette(12)
    write_label_png(tmp_path / "m.png", labels, palette)
    img = Image.open(tmp_path / "m.png")
    assert img.mode == "P"
    assert np.asarray(img).tolist() == labels.tolist()
    assert read_mask(tmp_path / "m.png").tolist() == labels.tolist()
    # VOC colour map: 1 = (128, 0, 0), 2 = (0, 128, 0)
    assert palette[1].tolist() == [128, 0, 0] and palette[2].tolist() == [0, 128, 0]


def test_overlay_blends_half_and_half():
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1] = (200, 0, 50)
    out = overlay(image, np.array([[0, 1]]), palette, alpha=0.5)
    assert out.tolist() == [[[50, 50, 50], [150, 50, 75]]]
    # odd totals round half to even: 101 / 2 -> 50, 103 / 2 -> 52, 105 / 2 -> 52
    odd = overlay(np.array([[[101, 103, 105]]], dtype=np.uint8), np.array([[0]]), palette)
    assert odd.tolist() == [[[50, 52, 52]]]


def test_overlay_at_one_half_is_exactly_the_float_blend():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    labels = rng.integers(0, 300, (40, 50))  # beyond 255 is clipped to the palette's last entry
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    colours = palette[labels.clip(0, 255)].astype(np.float32)
    expected = (0.5 * image.astype(np.float32) + 0.5 * colours).round().astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, palette), expected)
    np.testing.assert_array_equal(overlay(image, labels.astype(np.uint8) % 200, palette),
                                  (0.5 * image + 0.5 * palette[labels.astype(np.uint8) % 200]).round())
    quarter = (0.75 * image.astype(np.float32) + 0.25 * colours).round().astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, palette, alpha=0.25), quarter)
