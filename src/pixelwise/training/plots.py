"""Figures people would rather look at than read: training curves and the confusion matrix."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save, then free the figure now. A figure and its canvas and axes refer to each other, so without
    this they wait for Python's rarely-run full garbage collection: drawn every epoch, the curves
    alone made training's memory grow epoch after epoch (benchmarks/memory.py; see docs/reliability.md)."""
    fig.savefig(path, dpi=100)
    fig.clear()
    gc.collect()


def new_figure(figsize) -> Figure:
    """A figure bound to the Agg canvas directly: pyplot is never imported, so neither its global
    figure registry nor the user's chosen backend is touched."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(history: list[dict], path: str | Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig = new_figure((10, 4))
    ax_loss, ax_iou = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    ax_iou.plot(epochs, [h["val_mean_iou"] for h in history], marker=".", color="tab:green")
    ax_iou.set(xlabel="epoch", ylabel="mean IoU", title="Validation mean IoU", ylim=(0, 1))
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, class_names, path: str | Path) -> None:
    """Rows are true classes, normalised to 1: row i shows where class i's pixels went."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2)
    fig = new_figure((size, size))
    ax = fig.subplots()
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalised)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if rows[i, j] >= 0.005:
                    ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    save_figure(fig, path)
