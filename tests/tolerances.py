"""Tolerances for comparing float results that were summed in different orders, derived from fp32 rounding.

Two engines, two CPUs, two batch sizes or two process counts run the same network with different kernels,
so each sum adds its terms in another order. fp32 rounds each addition by at most u = 2**-24 of its
result. So reordering a sum of n terms changes it by at most 2 n u times the sum of the terms' magnitudes
(Higham's gamma_n), and typically by about sqrt(n) u of them. Exact equality across such a change is
luck; these helpers give each comparison the room the arithmetic needs and no more.
"""
import numpy as np
import torch

UNIT_ROUNDOFF = 2.0 ** -24

# A network's logits after reordered sums: each layer's dot products (tens to thousands of terms) drift by
# about sqrt(n) u ~ 1e-6 of their scale and tens of layers chain them. Measured on 2026-12-03: 1-2e-6 of the
# largest logit between eager PyTorch, ONNX Runtime and OpenVINO (AMD EPYC, Zen 3). 1e-5 leaves 5-10x;
# a real fault (a wrong resize, a missing layer, a swapped channel) is off by 1e-2 or more.
NETWORK_RTOL = 1e-5


def network_atol(reference: torch.Tensor) -> float:
    """Absolute tolerance for logits of the same network computed with other kernels."""
    return NETWORK_RTOL * float(reference.abs().max())


def dot_product_bound(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The worst-case rounding difference between two orders of summing a @ b.T in a's dtype, elementwise
    (2 gamma_n: each order is within gamma_n of the exact sum)."""
    n = a.shape[-1]
    unit = torch.finfo(a.dtype).eps / 2
    return 2 * n * unit * (a.abs() @ b.abs().T)


def assert_same_classes_where_decided(labels, logits: torch.Tensor, atol: float) -> None:
    """labels (H, W) equal the argmax of logits (C, H, W) at every pixel whose two best classes are further
    apart than 2 * atol: there rounding cannot swap them. Pixels closer than that may go either way."""
    top2 = logits.topk(2, dim=0).values
    decided = ((top2[0] - top2[1]) > 2 * atol).numpy()
    expected = logits.argmax(0).numpy()
    labels = np.asarray(labels)
    assert decided.mean() > 0.99, "almost every pixel should be decided; the check would be empty"
    np.testing.assert_array_equal(labels[decided], expected[decided])
