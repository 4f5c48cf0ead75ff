import pytest

from pairs import write_pair


@pytest.fixture
def folder_dataset(tmp_path):
    """images/ masks/ classes.txt with 3 classes and 12 samples, no split files."""
    root = tmp_path / "folder"
    for i in range(12):
        write_pair(root / "images" / f"img{i:02d}.png", root / "masks" / f"img{i:02d}.png", labels=(0, 1, 2, 255), seed=i)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    return root


@pytest.fixture(scope="session")
def nuclei_root():
    from pixelwise.demo import sample_root

    return sample_root()
