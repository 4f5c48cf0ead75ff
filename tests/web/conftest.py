import pytest
from webdata import cells_dataset, tiny_checkpoint


@pytest.fixture
def folder_root(tmp_path):
    return cells_dataset(tmp_path / "cells")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
