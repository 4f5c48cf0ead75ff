import pytest
import torch

import pixelwise
from pixelwise.config import TrainConfig
from pixelwise.checkpoint import save_checkpoint
from pixelwise.training.engine import build_model


@pytest.mark.parametrize("coarse,fine", [("fcn32s", "fcn16s"), ("fcn16s", "fcn8s")])
def test_staged_transfer_keeps_predictions_because_new_score_layers_start_at_zero(coarse, fine, tmp_path):
    torch.manual_seed(0)
    trained = pixelwise.create_model(coarse, num_classes=3, upsample="nearest", pretrained=False).eval()
    with torch.no_grad():  # stand-in for training: every score layer becomes non-zero
        for name, p in trained.named_parameters():
            if "score" in name:
                p.normal_()
    save_checkpoint(tmp_path / "coarse.pt", model=trained.state_dict(), config={})
    cfg = TrainConfig(data="unused", model=fine, upsample="nearest", pretrained=False,
                      init_from=str(tmp_path / "coarse.pt"))
    staged = build_model(cfg, num_classes=3).eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        before, after = trained(x), staged(x)
    assert before.abs().max() > 0
    assert torch.equal(before, after)
