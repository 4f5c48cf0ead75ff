import shutil
import time
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from pixelwise.data import duplicates
from pixelwise.data.duplicates import duplicate_groups, file_digest, near_pairs, perceptual_hash
from pixelwise.data.io import read_image

PHOTOS = sorted((Path(__file__).parent / "photos").glob("*.jpg"))


def test_file_digest_is_sha256_of_bytes(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    assert file_digest(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_perceptual_hash_matches_imagehash_hex():
    image = read_image(PHOTOS[0])
    assert perceptual_hash(image) == int(str(imagehash.phash(Image.fromarray(image))), 16)


def test_identical_files_form_one_group(tmp_path):
    a = tmp_path / "a.jpg"
    shutil.copy(PHOTOS[0], a)
    b = tmp_path / "copy_of_a.jpg"
    shutil.copy(PHOTOS[0], b)
    c = tmp_path / "other.jpg"
    shutil.copy(PHOTOS[1], c)
    assert duplicate_groups([a, c, b]) == [[a, b]]


def test_identical_files_are_decoded_once(tmp_path):
    paths = []
    for name in ("x.jpg", "y.jpg", "z.jpg"):
        shutil.copy(PHOTOS[0], tmp_path / name)
        paths.append(tmp_path / name)
    decoded = []

    def load(path):
        decoded.append(path)
        return read_image(path)

    assert duplicate_groups(paths, images=load) == [paths]
    assert decoded == [paths[0]]


def test_reencoded_brightened_copy_is_a_near_duplicate(tmp_path):
    original = tmp_path / "original.jpg"
    shutil.copy(PHOTOS[2], original)
    brighter = np.clip(read_image(original).astype(np.int16) + 10, 0, 255).astype(np.uint8)
    copy = tmp_path / "copy.png"
    Image.fromarray(brighter).resize((144, 96)).save(copy)  # re-encoded, resized and brighter
    assert file_digest(copy) != file_digest(original)
    distance = bin(perceptual_hash(read_image(copy)) ^ perceptual_hash(read_image(original))).count("1")
    assert distance <= 4
    assert duplicate_groups([original, copy]) == [[original, copy]]


def test_unrelated_photos_are_not_duplicates():
    hashes = [perceptual_hash(read_image(p)) for p in PHOTOS]
    assert min(bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 4
    assert duplicate_groups(PHOTOS) == []


def _fake_hashes(monkeypatch, table):
    """Images are 1x1 arrays holding an id; their 'phash' is table[id]."""
    monkeypatch.setattr(duplicates, "perceptual_hash", lambda image: table[int(image[0, 0, 0])])


def _distinct_files(tmp_path, count):
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"f{i}.bin")
        paths[-1].write_bytes(bytes([i]))
    return paths


def test_groups_merge_transitively(tmp_path, monkeypatch):
    # a~b (4 bits), b~c (4 bits), a and c are 8 bits apart; d is far from all
    table = {0: 0, 1: 0b1111, 2: 0b11111111, 3: 2**64 - 1}
    _fake_hashes(monkeypatch, table)
    a, b, c, d = _distinct_files(tmp_path, 4)
    ids = {a: 0, b: 1, c: 2, d: 3}
    load = lambda p: np.full((1, 1, 3), ids[p], dtype=np.uint8)  # noqa: E731
    assert duplicate_groups([d, c, a, b], images=load) == [[c, a, b]]
    assert duplicate_groups([a, b, c, d], images=load, max_distance=3) == []


def test_near_pairs_exact_values():
    # the top bit (beyond int64) counts like any other
    hashes = np.array([0, 1, 3, 2**63 + 0b11000, 2**63 + 0b11001], dtype=np.uint64)
    assert near_pairs(hashes, 0).tolist() == []
    assert near_pairs(hashes, 1).tolist() == [[0, 1], [1, 2], [3, 4]]
    assert near_pairs(hashes, 2).tolist() == [[0, 1], [0, 2], [1, 2], [3, 4]]
    assert near_pairs(hashes, 3).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 4], [3, 4]]


def test_near_pairs_across_chunks_matches_brute_force(monkeypatch):
    monkeypatch.setattr(duplicates, "_CHUNK", 7)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 20, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 20).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips, base[:5]])  # 1-bit neighbours and exact repeats
    expected = [[i, j] for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 3]
    assert near_pairs(hashes, 3).tolist() == expected
    assert len(expected) >= 25


def test_near_pairs_is_fast_for_5000_images():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 5000, dtype=np.uint64)
    hashes[4999] = hashes[17] ^ np.uint64(0b101)  # one planted near pair
    start = time.perf_counter()
    pairs = near_pairs(hashes, 4)
    elapsed = time.perf_counter() - start
    assert pairs.tolist() == [[17, 4999]]
    assert elapsed < 1.0, f"5000 hashes took {elapsed:.2f} s"


def test_unreadable_file_raises_data_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    from pixelwise.errors import DataError

    with pytest.raises(DataError, match="bad.png"):
        duplicate_groups([bad, PHOTOS[0]])
