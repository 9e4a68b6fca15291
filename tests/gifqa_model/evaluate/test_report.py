"""The evaluate figures, drawn for real by matplotlib on a few generated ShapesWorld GIFs."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gifqa_model.data.shapesworld import ShapesParams, generate_example
from gifqa_model.evaluate.plots import plot_confusion, plot_keyframe_montage, upscale_nearest
from gifqa_model.evaluate.report import pick_examples, write_eval_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_FRAMES = 8


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; also proves the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """Three ShapesWorld GIFs under a project root, referenced by relative paths."""
    params = ShapesParams(n_gifs=3, n_frames=N_FRAMES)
    gif_dir = tmp_path / "data" / "gifs"
    gif_dir.mkdir(parents=True)
    for i in range(3):
        (gif_dir / f"g{i}.gif").write_bytes(generate_example(i, params).gif_bytes)
    return tmp_path


@pytest.fixture()
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rows = [  # (qa_id, gif, question, gold, qtype, prediction)
        ("q0", "g0", "what color is the circle ?", "red", "color", "red"),
        ("q1", "g0", "what color is the square ?", "blue", "color", "red"),
        ("q2", "g1", "what color is the star ?", "blue", "color", "blue"),
        ("q3", "g1", "what color is the triangle ?", "red", "color", "Purple"),
        ("q4", "g2", "how many circles ?", "two", "number", "two"),
        ("q5", "g2", "how many squares ?", "three", "number", "two"),
        ("q6", "g2", "what is moving ?", "circle", "object", "square"),
    ]
    predictions = pd.DataFrame(
        rows, columns=["qa_id", "gif_id", "question", "answer", "qtype", "prediction"]
    )
    predictions["correct"] = predictions.answer == predictions.prediction.str.lower()
    keyframes = pd.DataFrame(
        {
            "qa_id": predictions.qa_id,
            "gif_id": predictions.gif_id,
            "frames": [[0, 1, 2, 3]] * len(predictions),
            "source_frames": [[0, 2, 5, 7]] * len(predictions),
        }
    )
    manifest = pd.DataFrame(
        {"gif_id": ["g0", "g1", "g2"], "path": [f"data/gifs/g{i}.gif" for i in range(3)]}
    )
    return predictions, keyframes, manifest


def test_confusion_csv_counts_hand_checked(tables, tmp_path: Path) -> None:
    predictions, _, _ = tables
    png = plot_confusion(predictions, "color", tmp_path / "confusion_color.png")
    table = pd.read_csv(tmp_path / "confusion_color.csv", index_col="gold")
    # gold red: once right, once "purple" (outside the gold vocabulary -> other);
    # gold blue: once predicted red, once right.
    assert list(table.columns) == ["blue", "red", "other"]
    assert table.loc["red"].to_dict() == {"blue": 0, "red": 1, "other": 1}
    assert table.loc["blue"].to_dict() == {"blue": 1, "red": 1, "other": 0}
    w, h = png_size(png)
    assert 300 <= w <= 2000 and 200 <= h <= 2000


def test_confusion_orders_number_words_by_value(tables, tmp_path: Path) -> None:
    predictions, _, _ = tables
    plot_confusion(predictions, "number", tmp_path / "confusion_number.png")
    table = pd.read_csv(tmp_path / "confusion_number.csv", index_col="gold")
    assert list(table.index) == ["two", "three"]
    assert table.loc["three", "two"] == 1


def test_montage_right_and_wrong(project: Path, tmp_path: Path) -> None:
    from gifqa_model.data.gifs import decode_frames

    gif = project / "data" / "gifs" / "g0.gif"
    frames = decode_frames(gif, indices=[0, 3, 6])
    examples = [
        {
            "frames": list(frames),
            "frame_indices": [0, 3, 6],
            "question": "what color ?",
            "answer": "red",
            "prediction": "red",
        },
        {
            "frames": list(frames[:2]),
            "frame_indices": [0, 3],
            "question": "how many ?",
            "answer": "two",
            "prediction": "three",
        },
    ]
    w, h = png_size(plot_keyframe_montage(examples, tmp_path / "montage.png"))
    # Two rows of at least 4 cells of ~125 px each (64 px frames, upscaled).
    assert w >= 4 * 100 and h >= 2 * 100


def test_upscale_is_nearest_neighbour() -> None:
    frame = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    big = upscale_nearest(frame, min_side=128)
    assert big.shape == (128, 128, 3)
    assert (big[::2, ::2] == frame).all() and (big[1::2, 1::2] == frame).all()


def test_write_eval_figures(project: Path, tables, tmp_path: Path) -> None:
    predictions, keyframes, manifest = tables
    metrics = {"accuracy": 0.43, "by_qtype": {"color": 0.5, "number": 0.5, "object": 0}}
    out = tmp_path / "evaluate"
    written = write_eval_figures(
        predictions, keyframes, manifest, metrics, out, n_montage=4, root=project
    )
    names = {p.name for p in written}
    assert names == {
        "accuracy_by_qtype.png",
        "confusion_color.png",
        "confusion_color.csv",
        "confusion_number.png",
        "confusion_number.csv",
        "keyframe_montage.png",
    }
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    for p in written:
        if p.suffix == ".png":
            png_size(p)
    _, h = png_size(out / "keyframe_montage.png")
    assert h >= 4 * 100  # four rows


def test_pick_examples_mixes_types_and_outcomes(tables) -> None:
    predictions, _, _ = tables
    picked = pick_examples(predictions, 4, seed=0)
    assert len(picked) == 4
    assert set(picked.qtype) == {"color", "number", "object"}
    assert set(picked.correct) == {True, False}
    assert picked.qa_id.tolist() == pick_examples(predictions, 4, seed=0).qa_id.tolist()


def test_missing_qtypes_and_gifs_are_skipped(project: Path, tables, tmp_path: Path) -> None:
    predictions, keyframes, manifest = tables
    only_objects = predictions[predictions.qtype == "object"]
    gone = manifest.assign(path="data/gifs/missing.gif")
    written = write_eval_figures(only_objects, keyframes, gone, {}, tmp_path, root=project)
    assert [p.name for p in written] == ["accuracy_by_qtype.png"]


def test_empty_predictions_do_not_crash(tables, tmp_path: Path) -> None:
    predictions, keyframes, manifest = tables
    written = write_eval_figures(predictions.iloc[:0], keyframes, manifest, {}, tmp_path)
    assert [p.name for p in written] == ["accuracy_by_qtype.png"]
    png_size(written[0])
    # The plot functions themselves also accept nothing to draw.
    png_size(plot_keyframe_montage([], tmp_path / "m.png"))
    png_size(plot_confusion(predictions.iloc[:0], "color", tmp_path / "c.png"))
    assert pd.read_csv(tmp_path / "confusion_color.csv").empty
