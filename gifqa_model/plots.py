"""Figures people would rather look at than read: curves and per-type accuracy."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_training_curve(curve_csv: Path, out_png: Path) -> Path:
    curve = pd.read_csv(curve_csv)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for col in ("loss", "answer_loss", "mvm_loss"):
        if col in curve:
            ax[0].plot(curve.step, curve[col], label=col, lw=1)
    ax[0].set_xlabel("step")
    ax[0].set_title("training loss")
    ax[0].legend()
    if "val_accuracy" in curve:
        val = curve.dropna(subset=["val_accuracy"])
        ax[1].plot(val.step, val.val_accuracy, marker="o")
    ax[1].set_ylim(0, 1)
    ax[1].set_xlabel("step")
    ax[1].set_title("val exact match")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_accuracy_by_qtype(metrics: dict, out_png: Path) -> Path:
    """Model vs prior baseline vs blanked frames, per question type."""
    model = metrics.get("accuracy_by_qtype", {})
    qtypes = sorted(model)
    series = {"model": model, "prior baseline": metrics.get("baseline_prior_by_qtype", {}),
              "blank frames": metrics.get("blank_frames_by_qtype", {}),
              "shuffled frames": metrics.get("shuffled_frames_by_qtype", {})}
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(series)
    for i, (name, acc) in enumerate(series.items()):
        ax.bar([q + i * width for q in range(len(qtypes))], [acc.get(t, 0) for t in qtypes],
               width, label=name)
    ax.set_xticks([q + 0.4 - width / 2 for q in range(len(qtypes))], qtypes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.set_title(f"test accuracy {metrics.get('accuracy', 0):.3f} (n={metrics.get('n_test', 0)})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
