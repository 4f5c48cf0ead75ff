"""The textbook worked examples for pooling, unpooling and transposed convolution, exactly."""
import torch
import torch.nn.functional as F

from pixelwise.models.upsample import Upsample

POOL_INPUT = torch.tensor([[[[1.0, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]]])


def test_max_pool_2x2():
    pooled, _ = F.max_pool2d(POOL_INPUT, 2, 2, return_indices=True)
    assert pooled[0, 0].tolist() == [[5, 6], [7, 8]]


def test_max_unpool_puts_values_back_where_the_maxima_were():
    _, indices = F.max_pool2d(POOL_INPUT, 2, 2, return_indices=True)
    x = torch.tensor([[[[1.0, 2], [3, 4]]]])
    out = Upsample(1, 2, "unpool")(x, (4, 4), indices)
    assert out[0, 0].tolist() == [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]]


def test_stride_2_transposed_conv_sums_weighted_kernel_copies():
    # each input value stamps value x 3x3 kernel of ones at (2i, 2j); overlaps add up
    x = torch.tensor([[[[1.0, 2], [3, 4]]]])
    out = F.conv_transpose2d(x, torch.ones(1, 1, 3, 3), stride=2)
    assert out[0, 0].tolist() == [[1, 1, 3, 2, 2],
                                  [1, 1, 3, 2, 2],
                                  [4, 4, 10, 6, 6],
                                  [3, 3, 7, 4, 4],
                                  [3, 3, 7, 4, 4]]
