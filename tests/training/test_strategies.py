import pytest
import torch

import pixelwise
from pixelwise.training import strategies


def tiny_model():
    torch.manual_seed(0)
    return pixelwise.create_model("fcn8s", backbone="efficientnet_lite0", num_classes=3, upsample="bilinear",
                                  pretrained=False)


def train_steps(model, groups, steps=2):
    optimizer = torch.optim.AdamW(groups, weight_decay=0.1)
    model.train()
    for _ in range(steps):
        loss = model(torch.rand(2, 3, 64, 64)).logsumexp(1).mean() + sum(p.square().sum() for p in
                                                                          model.decoder.parameters())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_head_strategy_freezes_encoder_weights_and_batchnorm_statistics():
    model = tiny_model()
    strategies.apply_strategy(model, "head")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    decoder_before = [p.clone() for p in model.decoder.parameters()]
    train_steps(model, strategies.parameter_groups(model, 1e-2, "head"))
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running stats alike
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.decoder.parameters()))
    bn = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn)  # still eval after model.train()


def test_last_k_trains_only_the_last_stages():
    model = tiny_model()
    strategies.apply_strategy(model, "last-k", trainable_stages=2)
    encoder = model.encoder
    stages = {encoder.stage_of(n): p.requires_grad for n, p in encoder.named_parameters()}
    assert stages == {0: False, 1: False, 2: False, 3: True, 4: True}
    before = {n: p.clone() for n, p in encoder.named_parameters()}
    train_steps(model, strategies.parameter_groups(model, 1e-2, "last-k"))
    for name, p in encoder.named_parameters():
        assert torch.equal(before[name], p) == (encoder.stage_of(name) < 3), name


def test_full_strategy_learning_rates_fall_by_the_ratio_per_stage():
    model = tiny_model()
    groups = strategies.parameter_groups(model, 1e-3, "full", lr_ratio=0.5)
    assert [g["name"] for g in groups] == [f"encoder stage {i}" for i in range(5)] + ["decoder"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 / 16, 1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3, 1e-3])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["lr"] == 1e-3 for g in strategies.parameter_groups(model, 1e-3, "last-k", lr_ratio=0.5))


def test_progressive_unfreezes_deepest_first_on_schedule():
    model = tiny_model()
    strategies.apply_strategy(model, "progressive")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    counts = [len(strategies.progressive_unfreeze(model, p)) for p in (0.0, 0.19, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9)]
    assert counts == [0, 0, 1, 2, 3, 4, 5, 5]
    strategies.progressive_unfreeze(model, 0.2)
    assert {model.encoder.stage_of(n) for n, p in model.encoder.named_parameters() if p.requires_grad} == {4}


def test_unknown_strategy_and_unknown_module_are_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.parameter_groups(model, 1e-3, "half")
    model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'extra.weight' is in no known part"):
        strategies.parameter_groups(model, 1e-3, "full")
    with pytest.raises(ValueError, match="belongs to no known stage"):
        model.encoder.stage_of("mystery.weight")
