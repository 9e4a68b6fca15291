"""Validate stage: real Great Expectations suites on small synthetic tables (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from gifqa_model.core.config import ValidateParams
from gifqa_model.core.schema import QTYPES, SPLITS
from gifqa_model.core.schema import VALIDATE_QUARANTINE_COLUMNS as QUARANTINE_COLUMNS
from gifqa_model.data.validation import GIF_QUARANTINED, ValidationFailed, run_validation

OUTPUTS = ("manifest_clean.parquet", "qa_clean.parquet", "quarantine.parquet", "gx_results.json")


def make_tables(n_gifs: int = 200, q_per_gif: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A valid manifest and QA table in the ingest / synth_qa contract shapes."""
    manifest = pd.DataFrame(
        {
            "gif_id": [f"g{i:04d}" for i in range(n_gifs)],
            "path": [f"data/gifs/g{i:04d}.gif" for i in range(n_gifs)],
            "sha256": [f"{i:064x}" for i in range(n_gifs)],
            "n_frames": [4 + i % 30 for i in range(n_gifs)],
            "width": [64] * n_gifs,
            "height": [48] * n_gifs,
            "duration_ms": [100 * (4 + i % 30) for i in range(n_gifs)],
            "description": ["a small red circle moves to the left ."] * n_gifs,
            "split": [SPLITS[i % 3] for i in range(n_gifs)],
            "source": ["shapes"] * n_gifs,
        }
    )
    rows = [
        {
            "qa_id": f"q{i:04d}_{j}",
            "gif_id": f"g{i:04d}",
            "question": "what color is the circle ?",
            "answer": "red" if j % 2 else "light red",
            "qtype": QTYPES[j % len(QTYPES)],
            "generator": "template",
            "split": SPLITS[i % 3],
        }
        for i in range(n_gifs)
        for j in range(q_per_gif)
    ]
    return manifest, pd.DataFrame(rows)


def reasons(quarantine: pd.DataFrame, table: str, row_id: str) -> set[str]:
    hit = quarantine[(quarantine["table"] == table) & (quarantine["row_id"] == row_id)]
    return set(hit["reason"])


def test_clean_tables_pass(tmp_cwd: Path) -> None:
    manifest, qa = make_tables()
    result = run_validation(manifest, qa, ValidateParams(), tmp_cwd / "out")

    assert result.quarantine.empty
    assert list(result.quarantine.columns) == list(QUARANTINE_COLUMNS)
    pd.testing.assert_frame_equal(result.clean_manifest, manifest)
    pd.testing.assert_frame_equal(result.clean_qa, qa)
    m = result.metrics
    assert m["passed"] and m["manifest"]["gx_success"] and m["qa"]["gx_success"]
    assert (m["manifest"]["rows"], m["qa"]["rows"]) == (200, 1000)
    assert m["manifest"]["failing_share"] == m["qa"]["failing_share"] == 0.0
    assert set(m["qa"]["expectations"].values()) == {0}
    json.dumps(m)  # the CLI writes this dict to metrics/validate.json

    out = tmp_cwd / "out"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert (out / "data_docs" / "index.html").is_file()
    assert list((out / "data_docs" / "validations").rglob("*.html"))
    results = json.loads((out / "gx_results.json").read_text())
    assert results["manifest"]["success"] and results["qa"]["success"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "qa_clean.parquet"), qa)


def corrupt(manifest: pd.DataFrame, qa: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest, qa = manifest.copy(), qa.copy()
    manifest.loc[3, "description"] = "   "
    manifest.loc[7, "n_frames"] = 0
    qa.loc[10, "question"] = "what color is the circle"
    qa.loc[20, "answer"] = ""
    qa.loc[30, "qtype"] = "opinion"
    qa.loc[41, "qa_id"] = qa.loc[40, "qa_id"]  # duplicate: both copies are suspect
    qa.loc[50, "gif_id"] = "g9999"  # a GIF the manifest never saw
    return manifest, qa


def test_corrupted_rows_are_quarantined_with_reasons(tmp_cwd: Path) -> None:
    manifest, qa = corrupt(*make_tables())
    result = run_validation(manifest, qa, ValidateParams(), tmp_cwd / "out")
    q = result.quarantine

    assert reasons(q, "manifest", "g0003") == {"expect_column_values_to_match_regex:description"}
    assert reasons(q, "manifest", "g0007") == {"expect_column_values_to_be_between:n_frames"}
    assert reasons(q, "qa", "q0002_0") == {"expect_column_values_to_match_regex:question"}
    assert reasons(q, "qa", "q0004_0") == {"expect_column_values_to_match_regex:answer"}
    assert reasons(q, "qa", "q0006_0") == {"expect_column_values_to_be_in_set:qtype"}
    assert reasons(q, "qa", "q0008_0") == {"expect_column_values_to_be_unique:qa_id"}
    assert sorted(q.loc[q["row_id"] == "q0008_0", "row_index"]) == [40, 41]
    assert reasons(q, "qa", "q0010_0") == {"expect_column_values_to_be_in_set:gif_id"}
    # Every question about a quarantined GIF is dropped with it.
    dropped = q[q["reason"] == GIF_QUARANTINED]
    assert set(qa.loc[dropped["row_index"], "gif_id"]) == {"g0003", "g0007"}
    assert len(dropped) == 10

    assert set(result.clean_manifest["gif_id"]) == set(manifest["gif_id"]) - {"g0003", "g0007"}
    assert len(result.clean_qa) == 1000 - 6 - 10
    assert not result.clean_qa["gif_id"].isin(["g0003", "g0007", "g9999"]).any()
    assert result.clean_qa["qa_id"].is_unique

    m = result.metrics
    assert m["passed"] and not m["qa"]["gx_success"]
    assert m["manifest"]["failing_rows"] == 2
    # gif_quarantined rows count against the manifest's share, not again against the QA one.
    assert m["qa"]["failing_rows"] == 6 and m["qa"]["gif_quarantined_rows"] == 10
    assert m["qa"]["failing_share"] == pytest.approx(6 / 1000)
    assert m["qa"]["expectations"]["expect_column_values_to_be_unique:qa_id"] == 2
    saved = pd.read_parquet(tmp_cwd / "out" / "quarantine.parquet")
    pd.testing.assert_frame_equal(saved, q)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("question", " ".join(["word"] * 31) + " ?", "expect_column_values_to_not_match_regex"),
        ("answer", "a very dark red", "expect_column_values_to_match_regex"),
        ("answer", " red", "expect_column_values_to_match_regex"),
        ("qa_id", None, "expect_column_values_to_not_be_null"),
        ("split", "holdout", "expect_column_values_to_be_in_set"),
    ],
)
def test_qa_bounds(tmp_cwd: Path, column: str, value: object, reason: str) -> None:
    manifest, qa = make_tables(n_gifs=20)
    qa.loc[5, column] = value
    result = run_validation(manifest, qa, ValidateParams(), tmp_cwd / "out")
    q = result.quarantine
    assert q[["row_index", "reason"]].values.tolist() == [[5, f"{reason}:{column}"]]
    assert len(result.clean_qa) == len(qa) - 1


def test_manifest_bounds(tmp_cwd: Path) -> None:
    manifest, qa = make_tables(n_gifs=20)
    manifest.loc[1, "width"] = 4096
    manifest.loc[2, "sha256"] = "XYZ"
    manifest.loc[4, "sha256"] = manifest.loc[5, "sha256"]
    manifest.loc[6, "duration_ms"] = -1
    params = ValidateParams(max_failing_share=0.5, max_side=1024)
    q = run_validation(manifest, qa, params, tmp_cwd / "out").quarantine
    got = set(map(tuple, q.loc[q["table"] == "manifest", ["row_index", "reason"]].values))
    assert got == {
        (1, "expect_column_values_to_be_between:width"),
        (2, "expect_column_values_to_match_regex:sha256"),
        (4, "expect_column_values_to_be_unique:sha256"),
        (5, "expect_column_values_to_be_unique:sha256"),
        (6, "expect_column_values_to_be_between:duration_ms"),
    }


def test_failing_share_above_threshold_raises_after_writing(tmp_cwd: Path) -> None:
    manifest, qa = make_tables(n_gifs=40)
    qa.loc[:19, "question"] = "no question mark here"  # 20 of 200 = 10%
    out = tmp_cwd / "out"
    with pytest.raises(ValidationFailed) as err:
        run_validation(manifest, qa, ValidateParams(max_failing_share=0.05), out)

    message = str(err.value)
    assert "qa" in message and "10.00%" in message
    assert "max_failing_share 5.00%" in message
    assert "expect_column_values_to_match_regex:question (20)" in message
    assert "manifest:" not in message  # only the table over the threshold is blamed
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert (out / "data_docs" / "index.html").is_file()
    assert len(pd.read_parquet(out / "quarantine.parquet")) == 20


def test_deterministic(tmp_cwd: Path) -> None:
    manifest, qa = corrupt(*make_tables(n_gifs=60))
    first = run_validation(manifest, qa, ValidateParams(max_failing_share=1.0), tmp_cwd / "a")
    second = run_validation(manifest, qa, ValidateParams(max_failing_share=1.0), tmp_cwd / "b")
    assert first.metrics == second.metrics
    for name in ("manifest_clean.parquet", "qa_clean.parquet", "quarantine.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_cwd / "a" / name), pd.read_parquet(tmp_cwd / "b" / name)
        )


def test_missing_column_and_bad_params(tmp_cwd: Path) -> None:
    manifest, qa = make_tables(n_gifs=5)
    with pytest.raises(ValueError, match="answer"):
        run_validation(manifest, qa.drop(columns=["answer"]), ValidateParams(), tmp_cwd)
    with pytest.raises(ValidationError):
        ValidateParams(min_frames=10, max_frames=5)
    with pytest.raises(ValidationError):
        ValidateParams(max_failing_share=1.5)
