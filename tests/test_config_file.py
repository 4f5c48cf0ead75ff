"""OUT/config.yaml: every run writes its resolved configuration, and `train --config` reruns it."""
import pytest
import yaml

from pixelwise.checkpoint import load_checkpoint
from pixelwise.cli import main

RUN = ["--epochs", "2", "--batch-size", "4", "--crop-size", "64", "--no-pretrained", "--infer-scale", "1",
       "--deterministic", "--seed", "3", "--augment", "auto"]


def test_a_rerun_from_config_yaml_decides_the_same_and_ends_with_equal_weights(nuclei_root, tmp_path):
    assert main(["train", "--data", str(nuclei_root), "--out", str(tmp_path / "first"), *RUN]) == 0
    written = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())
    # each auto resolved: no pretrained weights -> scratch; the nuclei labels have no up -> top-down
    assert written["strategy"] == "scratch" and written["augment"] == "top-down"
    assert written["precision"] in ("fp32", "bf16") and written["device"] == "cpu"
    assert written["epochs"] == 2 and written["crop_size"] == [64, 64] and written["time_budget"] is None
    assert main(["train", "--config", str(tmp_path / "first" / "config.yaml"), "--out", str(tmp_path / "again")]) == 0
    first, again = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("first", "again"))
    assert first.keys() == again.keys() and all((first[k] == again[k]).all() for k in first)


def test_options_on_the_command_line_override_the_file(nuclei_root, tmp_path, monkeypatch):
    from pixelwise import cli

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": str(nuclei_root), "time_budget": 45.0, "lr": 0.01, "seed": 7}))
    seen = {}
    monkeypatch.setattr(cli, "cmd_train", lambda args: seen.update(vars(args)))
    main(["train", "--config", str(config), "--epochs", "3", "--seed", "1"])
    assert seen["data"] == str(nuclei_root) and seen["lr"] == 0.01  # from the file
    assert seen["seed"] == 1 and seen["epochs"] == 3 and seen["time_budget"] is None  # the command line's


@pytest.mark.parametrize("content, message", [
    ("data: d\nlearning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("data: d\nbatch_sise: 4\n", "unknown key 'batch_sise'; did you mean 'batch_size'?"),
    ("data: d\nepochs: ten\n", "epochs must be a whole number, got 'ten'"),
    ("data: d\ncrop_size: [64]\n", "crop_size must be a list of 2 (a whole number, a whole number), got [64]"),
    ("data: d\nema: true\n", "ema must be a number, got True"),
    ("- data\n", "expected key: value lines, got list"),
])
def test_a_config_with_an_unknown_key_or_a_wrong_type_is_refused_naming_the_key(tmp_path, capsys, content, message):
    config = tmp_path / "config.yaml"
    config.write_text(content)
    assert main(["train", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
