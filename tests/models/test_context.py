"""The context decoder: scores at stride 4, auxiliary heads that exist only while training, an exact export."""
import numpy as np
import pytest
import torch
from torch import nn

import pixelwise
from pixelwise.inference.export import check_against_eager, export_network
from pixelwise.training.engine import AUX_WEIGHT, train_one_epoch


def build(backbone="efficientnet_lite0", num_classes=5):
    torch.manual_seed(0)
    model = pixelwise.create_model("context_fpn", backbone=backbone, num_classes=num_classes, pretrained=False)
    for parameter in model.decoder.parameters():  # the classifier starts near zero: make every logit count
        nn.init.normal_(parameter, std=0.2)
    return model


def test_scores_come_out_at_stride_4_and_aux_heads_run_only_in_training():
    model = build()
    assert model.decoder.output_stride == 4
    seen = []
    model.decoder.classifier.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    model.train()
    out = model(torch.rand(2, 3, 70, 100))
    assert seen[-1] == (2, 5, 96 // 4, 128 // 4)  # padded to 96x128, scored at a quarter of that
    assert out.shape == (2, 5, 70, 100)
    assert [a.shape for a in model.aux_logits] == [(2, 5, 70, 100)] * 2  # from strides 16 and 8
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 70, 100))
    assert model.aux_logits == [] and model.decoder.aux_scores == []


def test_the_training_loss_adds_each_aux_head_at_its_weight():
    model = build(num_classes=3)
    images, target = torch.rand(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    calls = []

    def loss_fn(logits, labels):
        calls.append(logits.detach().clone())
        return nn.functional.cross_entropy(logits, labels)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = train_one_epoch(model, [(images, target)], loss_fn, optimizer, torch.device("cpu"), None,
                            control=lambda step: (0.5, False), base_lrs=[0.0], warmup=0.0)
    assert len(calls) == 3  # the output, then the stride-16 and stride-8 heads
    expected = sum(w * nn.functional.cross_entropy(c, target).item() for w, c in zip((1, AUX_WEIGHT, AUX_WEIGHT), calls))
    assert stats["loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet_v2"])
def test_the_exported_graph_equals_eager_at_any_size_and_holds_no_aux_head(backbone):
    model = build(backbone).eval()
    proto = export_network(model, {})
    # raises when the graph's logits leave export's own relative tolerance, or a size was baked in
    check_against_eager(model, proto, shapes=[(1, 37, 53), (2, 64, 96), (1, 100, 70)])
    names = {init.name for init in proto.graph.initializer}
    exported = sum(int(np.prod(init.dims)) for init in proto.graph.initializer)
    aux = sum(p.numel() for p in model.decoder.aux_classifiers.parameters())
    assert not any("aux" in name for name in names)
    assert exported <= sum(p.numel() for p in model.parameters()) - aux
