"""Figures people would rather look at than read: curves, per-type accuracy, confusions,
and the keyframes the model was shown."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_training_curve(curve_csv: Path, out_png: Path) -> Path:
    curve = pd.read_csv(curve_csv)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for col in ("loss", "answer_loss", "mvm_loss", "scene_loss"):
        if col in curve and curve[col].abs().sum() > 0:  # a loss that is off stays off the plot
            ax[0].plot(curve.step, curve[col], label=col, lw=1)
    ax[0].set_xlabel("step")
    ax[0].set_title("training loss")
    ax[0].legend()
    if "val_accuracy" in curve:
        val = curve.dropna(subset=["val_accuracy"])
        ax[1].plot(val.step, val.val_accuracy, marker="o", color="black", label="all")
        for col in sorted(c for c in curve if c.startswith("val_accuracy_")):
            ax[1].plot(val.step, val[col], lw=1, label=col.removeprefix("val_accuracy_"))
        ax[1].legend(fontsize=7, ncol=2)
    ax[1].set_ylim(0, 1)
    ax[1].set_xlabel("step")
    ax[1].set_title("val exact match")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_accuracy_by_qtype(metrics: dict, out_png: Path) -> Path:
    """Model vs prior baseline vs blanked frames, per question type."""
    model = metrics.get("by_qtype", {})
    qtypes = sorted(model)
    series = {
        "model": model,
        "prior baseline": metrics.get("prior_by_qtype", {}),
        "blank frames": metrics.get("blank_frames_by_qtype", {}),
        "shuffled frames": metrics.get("shuffled_frames_by_qtype", {}),
    }
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(series)
    for i, (name, acc) in enumerate(series.items()):
        ax.bar(
            [q + i * width for q in range(len(qtypes))],
            [acc.get(t, 0) for t in qtypes],
            width,
            label=name,
        )
    ax.set_xticks([q + 0.4 - width / 2 for q in range(len(qtypes))], qtypes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.set_title(f"test accuracy {metrics.get('accuracy', 0):.3f} (n={metrics.get('n_test', 0)})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


# Number words in counting order, so a number confusion reads one, two, three, not one,
# three, two; anything else (colours) is sorted alphabetically after them.
_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
]
OTHER = "other"


def _label_order(label: str) -> tuple[int, int, str]:
    if label in _NUMBER_WORDS:
        return (0, _NUMBER_WORDS.index(label), label)
    if label.isdigit():
        return (0, int(label), label)
    return (1, 0, label)


def confusion_table(predictions: pd.DataFrame, qtype: str) -> pd.DataFrame:
    """Counts of (gold, predicted) for one qtype: rows gold answers, columns predicted.

    Answers are compared in their exact-match form (`match_form`), as accuracy is.
    The columns are the gold vocabulary plus "other" (always present, so a zero there says
    the model stays inside the vocabulary rather than the column being forgotten).
    """
    from gifqa_model.qa.normalize import match_form

    rows = predictions[predictions.qtype == qtype] if len(predictions) else predictions
    gold = [match_form(a) for a in rows.get("answer", [])]
    pred = [match_form(p) for p in rows.get("prediction", [])]
    labels = sorted(set(gold), key=_label_order)
    vocab = set(labels)
    pred = [p if p in vocab else OTHER for p in pred]
    table = pd.DataFrame(
        0, index=pd.Index(labels, name="gold"), columns=pd.Index([*labels, OTHER], name="predicted")
    )
    for g, p in zip(gold, pred, strict=True):
        table.loc[g, p] += 1
    return table


def plot_confusion(predictions: pd.DataFrame, qtype: str, out_png: Path) -> Path:
    """Gold vs predicted answers for one qtype as an annotated heatmap, plus the same table
    as `confusion_<qtype>.csv` beside the PNG (tables are for reading, too)."""
    out_png = Path(out_png)
    table = confusion_table(predictions, qtype)
    table.to_csv(out_png.with_name(f"confusion_{qtype}.csv"))
    counts = table.to_numpy()
    n = int(counts.sum())
    n_rows, n_cols = counts.shape
    # Grows with the vocabulary (~10 classes stay legible) but never narrower than the title.
    fig, ax = plt.subplots(figsize=(max(5.5, 1.8 + 0.7 * n_cols), max(3.0, 1.4 + 0.6 * n_rows)))
    if n == 0:
        ax.text(0.5, 0.5, f"no test questions of type {qtype!r}", ha="center", va="center")
        ax.set_axis_off()
    else:
        # Colour by the share of each gold row, so a rare gold class is as visible as a
        # frequent one; the printed numbers stay raw counts.
        share = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(n_rows):
            for j in range(n_cols):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
        # Outline the diagonal (right answers) and set "other" apart from the vocabulary.
        for i in range(n_rows):
            ax.add_patch(
                plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2, edgecolor="#1a7f37")
            )
        ax.axvline(n_cols - 1.5, color="grey", lw=1)
        ax.set_xticks(range(n_cols), table.columns, rotation=45, ha="right")
        totals = counts.sum(axis=1)
        ax.set_yticks(
            range(n_rows), [f"{g} ({t})" for g, t in zip(table.index, totals, strict=True)]
        )
        ax.set_xlabel("model answer")
        ax.set_ylabel("gold answer")
        correct = int(sum(counts[i, i] for i in range(n_rows)))
        ax.set_title(f"{qtype}: gold vs model (n={n}, exact match {correct / n:.3f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def upscale_nearest(frame: np.ndarray, min_side: int = 128) -> np.ndarray:
    """Repeat pixels by an integer factor until the short side reaches `min_side`: a 64 px
    ShapesWorld frame stays crisp instead of turning into a blur."""
    factor = max(1, -(-min_side // max(1, min(frame.shape[:2]))))
    return frame.repeat(factor, axis=0).repeat(factor, axis=1)


def _caption(example: dict) -> tuple[str, bool]:
    from gifqa_model.qa.normalize import match_form

    gold, model = str(example.get("answer", "")), str(example.get("prediction", ""))
    correct = example.get("correct")
    if correct is None:
        correct = match_form(model) == match_form(gold)
    # A mark as well as the colour, for readers who cannot tell red from green.
    mark = "\u2713" if correct else "\u2717"
    text = f"{mark} Q: {example.get('question', '')} | gold: {gold} | model: {model}"
    extra = [str(example[k]) for k in ("qtype", "gif_id") if example.get(k) is not None]
    if extra:
        text += f"   [{', '.join(extra)}]"
    return textwrap.shorten(text, 120, placeholder=" …"), bool(correct)


def plot_keyframe_montage(examples: list[dict], out_png: Path) -> Path:
    """One row per example: its keyframes side by side in time order, each with its frame
    index in the GIF above it, and a caption "Q | gold | model" in green (right) or red
    (wrong). Examples may carry `correct`, `qtype` and `gif_id`; they are used when present."""
    out_png = Path(out_png)
    n_cols = max((len(e["frames"]) for e in examples), default=0)
    if not examples or n_cols == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.text(0.5, 0.5, "no examples", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(out_png, dpi=100)
        plt.close(fig)
        return out_png
    cell = 1.25  # inches per frame; 125 px at dpi 100, about twice a 64 px frame
    n_cols = max(n_cols, 4)  # keeps room for the caption when k is small
    fig, axes = plt.subplots(
        len(examples), n_cols, squeeze=False, figsize=(cell * n_cols, (cell + 0.55) * len(examples))
    )
    for r, example in enumerate(examples):
        indices = list(example.get("frame_indices", range(len(example["frames"]))))
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c < len(example["frames"]):
                ax.imshow(
                    upscale_nearest(np.asarray(example["frames"][c])), interpolation="nearest"
                )
                ax.set_title(f"frame {indices[c]}" if c < len(indices) else "", fontsize=8, pad=2)
        text, correct = _caption(example)
        axes[r, 0].text(
            0,
            -0.06,
            text,
            transform=axes[r, 0].transAxes,
            ha="left",
            va="top",
            fontsize=9,
            color="#1a7f37" if correct else "#cf222e",
            fontweight="bold",
        )
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        top=1 - 0.3 / fig.get_figheight(),
        bottom=0.35 / fig.get_figheight(),
        wspace=0.05,
        hspace=0.55,
    )
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_accuracy_by_split(
    splits: dict[str, dict],
    out_png: Path,
    other: dict[str, dict] | None = None,
    labels: tuple[str, str] = ("model", "other"),
) -> Path:
    """Accuracy per benchmark split (in-distribution first, then each OOD split), with a
    second model's beside it when given (the promotion report: challenger vs champion)."""
    names = list(splits)
    series = {labels[0]: splits} | ({labels[1]: other} if other else {})
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(series)
    for i, (label, table) in enumerate(series.items()):
        ax.bar(
            [k + i * width for k in range(len(names))],
            [table.get(n, {}).get("accuracy", 0) for n in names],
            width,
            label=label,
        )
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.set_title("accuracy per benchmark split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_reliability(table: list[dict], ece: float, out_png: Path) -> Path:
    """Accuracy against mean confidence per confidence bin; the diagonal is calibrated."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    if table:
        ax.bar(
            [b["low"] for b in table],
            [b["accuracy"] for b in table],
            [b["high"] - b["low"] for b in table],
            align="edge",
            alpha=0.6,
            edgecolor="black",
            label="accuracy",
        )
        ax.plot(
            [b["confidence"] for b in table],
            [b["accuracy"] for b in table],
            "o",
            color="black",
            ms=3,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("exact match")
    ax.set_title(f"reliability on the benchmark (ECE {ece:.3f})")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
