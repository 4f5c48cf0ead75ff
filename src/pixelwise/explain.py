"""`pixelwise explain upsampling`: the four upsampling operators on the textbook worked examples,
drawn as annotated grids, for people learning what each one does."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pixelwise.models.upsample import Upsample, bilinear_kernel  # noqa: E402

SMALL = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
POOL_INPUT = torch.tensor([[[[1.0, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]]])


def draw_grid(ax, values, title: str, highlight=None, cmap="Blues", fmt="{:g}"):
    """A matrix as coloured cells with each value written in; `highlight` cells get a red frame."""
    values = values.detach().numpy() if isinstance(values, torch.Tensor) else values
    values = np.asarray(values, dtype=float)
    ax.imshow(values, cmap=cmap, vmin=min(0.0, values.min()), vmax=max(values.max(), 1e-9))
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(round(v, 2)), ha="center", va="center", fontsize=11,
                color="white" if v > 0.6 * values.max() else "black")
        if highlight is not None and highlight[i][j]:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5, zorder=3))
    ax.set_xticks(np.arange(-0.5, values.shape[1], 1), minor=True)
    ax.set_yticks(np.arange(-0.5, values.shape[0], 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", bottom=False, left=False, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=11)


def figure(panels, path: Path, suptitle: str, note: str = "") -> Path:
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.9))
    for ax, panel in zip(np.atleast_1d(axes), panels):
        draw_grid(ax, **panel)
    fig.suptitle(suptitle, fontsize=13)
    if note:
        fig.text(0.5, 0.02, note, ha="center", fontsize=9, wrap=True)
    fig.tight_layout(rect=(0, 0.07 if note else 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def explain_upsampling(out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    nearest = Upsample(1, 2, "nearest")(SMALL, (4, 4))[0, 0]
    written.append(figure([dict(values=SMALL[0, 0], title="input 2x2"),
                           dict(values=nearest, title="nearest neighbour 4x4")], out / "nearest.png",
                          "Nearest neighbour: every value is copied into a 2x2 block"))

    bilinear = Upsample(1, 2, "bilinear")(SMALL, (4, 4))[0, 0]
    written.append(figure([dict(values=SMALL[0, 0], title="input 2x2"),
                           dict(values=bilinear, title="bilinear 4x4")], out / "bilinear.png",
                          "Bilinear: each output is a distance-weighted mix of its 4 nearest inputs",
                          "pixel centres aligned (align_corners=False); the border repeats the edge value"))

    pooled, indices = F.max_pool2d(POOL_INPUT, 2, 2, return_indices=True)
    is_max = np.zeros((4, 4), dtype=bool)
    for flat in indices.flatten().tolist():
        is_max[flat // 4, flat % 4] = True
    unpooled = Upsample(1, 2, "unpool")(SMALL, (4, 4), indices)[0, 0]
    written.append(figure([dict(values=POOL_INPUT[0, 0], title="encoder input", highlight=is_max),
                           dict(values=pooled[0, 0], title="2x2 max pool"),
                           dict(values=SMALL[0, 0], title="decoder values"),
                           dict(values=unpooled, title="max unpooling", highlight=is_max)],
                          out / "max_unpooling.png",
                          "Max unpooling puts each value back where the encoder's maximum was",
                          "red frames: positions remembered by the max pool (its indices); all other cells get 0"))

    kernel = torch.ones(1, 1, 3, 3)
    stamps = []
    for i in range(2):
        for j in range(2):
            one = torch.zeros_like(SMALL)
            one[0, 0, i, j] = SMALL[0, 0, i, j]
            stamps.append(F.conv_transpose2d(one, kernel, stride=2)[0, 0])
    summed = sum(stamps)
    overlap = (sum((s != 0).int() for s in stamps) > 1).numpy()
    panels = [dict(values=s, title=f"copy of kernel x {int(SMALL.flatten()[k])}", cmap="Greens")
              for k, s in enumerate(stamps)]
    panels.append(dict(values=summed, title="sum: the output", highlight=overlap))
    written.append(figure(panels, out / "transposed_convolution.png",
                          "Transposed convolution (3x3 kernel of ones, stride 2): weighted kernel copies, summed",
                          "output size (I-1)·S - 2P + K = (2-1)·2 - 0 + 3 = 5; red frames: overlaps, where copies add up"))

    ramp = bilinear_kernel(4)
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    learned = Upsample(1, 2, "transposed")(x, (6, 6))[0, 0]
    reference = F.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
    interior = np.zeros((6, 6), dtype=bool)
    interior[1:-1, 1:-1] = True
    written.append(figure([dict(values=ramp, title="bilinear kernel 4x4", fmt="{:.3g}"),
                           dict(values=x[0, 0], title="input 3x3"),
                           dict(values=learned, title="transposed conv, bilinear init", highlight=interior, fmt="{:.3g}"),
                           dict(values=reference, title="bilinear interpolation", highlight=interior, fmt="{:.3g}")],
                          out / "transposed_bilinear_init.png",
                          "A transposed convolution initialised with the bilinear kernel interpolates bilinearly",
                          "inside the red frame the two agree exactly; at the border the convolution sees zero padding. "
                          "Training may then change the kernel."))
    return written


def _box(ax, x, y, text, colour):
    ax.text(x, y, text, ha="center", va="center", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.4", facecolor=colour, edgecolor="0.3"))


def _arrow(ax, start, end, colour="0.3"):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color=colour, lw=1.4))


def draw_decoder(ax, model, title: str, size=(360, 480)) -> None:
    """One model's path from the encoder's features to the class scores, read from the model itself:
    which stride feeds the decoder, and at which stride the scores come out."""
    encoder, decoder = model.encoder, model.decoder
    strides = sorted(set(encoder.strides))
    last_at = {s: i for i, s in enumerate(encoder.strides)}
    used = {encoder.strides[i] for i in decoder.skip_indices} | {strides[-1]}
    row = {s: -k for k, s in enumerate(strides)}  # finest stride on top
    padded = [-(-n // model.size_multiple) * model.size_multiple for n in size]
    for s in strides:
        h, w = padded[0] // s, padded[1] // s
        colour = "#cfe3f7" if s in used else "#eeeeee"
        _box(ax, 0, row[s], f"stride {s}: {encoder.out_channels[last_at[s]]} ch, {h}x{w}", colour)
    path = [strides[-1]] + [encoder.strides[i] for i in decoder.skip_indices]
    is_fcn = hasattr(decoder, "score_skips")
    for k, s in enumerate(path):
        if k == 0:
            label = "class scores (1x1)" if is_fcn else "global context\n(mean gate + dilated)"
        else:
            label = "upsample x2, + scores" if is_fcn else f"resize, + 1x1 of s{s},\nseparable 3x3"
        _box(ax, 2.2, row[s], label, "#fde2c8")
        _arrow(ax, (0.95, row[s]), (1.45, row[s]))
        if k:
            _arrow(ax, (2.2, row[path[k - 1]] + 0.22), (2.2, row[s] - 0.22))
    out = decoder.output_stride
    _box(ax, 4.3, row[out], f"x{out} to the image\n{size[0]}x{size[1]}, {model.num_classes} classes", "#d5f0d5")
    _arrow(ax, (3.05, row[out]), (3.55, row[out]))
    ax.set_xlim(-1.3, 5.3)
    ax.set_ylim(-len(strides) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(title, fontsize=11)


def explain_decoders(out: str | Path, num_classes: int = 11) -> list[Path]:
    """FCN-8s against the context decoder on the default backbone, as the registry builds them."""
    from pixelwise.models.registry import create_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
    for ax, name, title in zip(axes, ("fcn8s", "context_fpn"),
                               ("fcn8s: scores added at strides 32, 16, 8; output stride 8",
                                "context_fpn: features fused at strides 32, 16, 8, 4; output stride 4")):
        draw_decoder(ax, create_model(name, num_classes=num_classes, pretrained=False), title)
    fig.suptitle("Where the decoder reads the encoder (efficientnet_lite0; blue: strides the decoder uses)",
                 fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = out / "decoders.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
