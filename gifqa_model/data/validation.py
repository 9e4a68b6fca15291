"""Validate stage: Great Expectations suites over the ingest manifest and the QA table.

Both tables are checked with real GX 1.x expectation suites run on an ephemeral (in-memory)
context. Results are requested row by row (``COMPLETE`` result format with index columns), so a
failing expectation points at the exact rows to quarantine; the rest of the data flows on.

Outputs (all under ``out_dir``): the clean tables, the quarantine table (one row per failing
row and reason), the raw GX results as JSON and a GX data docs site. The stage fails with
:class:`ValidationFailed` when a table's failing share passes ``max_failing_share`` -- but only
after everything is written, so the report explaining the failure can be read.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gifqa_model.core.artifacts import MANIFEST_CLEAN_FILE, QA_CLEAN_FILE, VALIDATE_QUARANTINE_FILE
from gifqa_model.core.config import ValidateParams
from gifqa_model.core.env import apply_offline_env
from gifqa_model.core.schema import (
    MANIFEST_COLUMNS,
    QA_COLUMNS,
    SPLITS,
    VALIDATE_QUARANTINE_COLUMNS,
)

# GX reads its analytics switch at import time, so the offline env must be set before it loads.
apply_offline_env()

import great_expectations as gx  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

# A positional row number added to the frames GX sees. The natural ids (gif_id, qa_id) are
# reported too, but they cannot locate a row when they are themselves null or duplicated --
# exactly the rows the id expectations flag.
ROW_COLUMN = "_row"
# Reason for QA rows dropped because their GIF was quarantined (not a GX expectation).
GIF_QUARANTINED = "gif_quarantined"
DATA_DOCS_SITE = "gifqa_validate"


class ValidationFailed(RuntimeError):
    """A table's failing share passed the threshold. Outputs were written before raising."""


@dataclass
class ValidationResult:
    clean_manifest: pd.DataFrame
    clean_qa: pd.DataFrame
    quarantine: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)


def manifest_expectations(params: ValidateParams) -> list[gx.expectations.Expectation]:
    """The manifest suite. Map expectations skip nulls, hence the explicit not-null checks."""
    E = gx.expectations
    not_null = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"every GIF has a {c}")
        for c in ("gif_id", "path", "sha256", "n_frames", "width", "height", "description")
    ]
    return [
        *not_null,
        E.ExpectColumnValuesToBeUnique(column="gif_id", description="gif_id is a key"),
        E.ExpectColumnValuesToBeUnique(column="sha256", description="no GIF is ingested twice"),
        # \A..\Z rather than ^..$: `$` would also accept a trailing newline.
        E.ExpectColumnValuesToMatchRegex(
            column="sha256", regex=r"\A[0-9a-f]{64}\Z", description="lower-case hex SHA-256"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="n_frames",
            min_value=params.min_frames,
            max_value=params.max_frames,
            description="enough frames to be an animation, few enough to decode",
        ),
        E.ExpectColumnValuesToBeBetween(column="width", min_value=1, max_value=params.max_side),
        E.ExpectColumnValuesToBeBetween(column="height", min_value=1, max_value=params.max_side),
        E.ExpectColumnValuesToBeBetween(column="duration_ms", min_value=0),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        # Searched, not anchored: one non-space character anywhere makes a description.
        E.ExpectColumnValuesToMatchRegex(
            column="description", regex=r"\S", description="description is not blank"
        ),
    ]


def qa_expectations(
    params: ValidateParams, gif_ids: list[str]
) -> list[gx.expectations.Expectation]:
    """The QA suite; ``gif_ids`` are the GIFs the manifest knows (referential integrity)."""
    E = gx.expectations
    not_null = [
        E.ExpectColumnValuesToNotBeNull(column=c)
        for c in ("qa_id", "gif_id", "question", "answer", "qtype")
    ]
    n_answer = params.max_answer_words
    n_question = params.max_question_words
    return [
        *not_null,
        E.ExpectColumnValuesToBeUnique(column="qa_id", description="qa_id is a key"),
        E.ExpectColumnValuesToMatchRegex(
            column="question", regex=r"\?\Z", description='question ends with "?"'
        ),
        # The word bound is a *not*-match so its reason differs from the "?" check's reason.
        E.ExpectColumnValuesToNotMatchRegex(
            column="question",
            regex=rf"(?:\S+\s+){{{n_question}}}\S",
            description=f"question has at most {n_question} words",
        ),
        E.ExpectColumnValuesToMatchRegex(
            column="answer",
            regex=rf"\A\S+(?:\s+\S+){{0,{n_answer - 1}}}\Z",
            description=f"answer is 1 to {n_answer} words, no stray whitespace",
        ),
        E.ExpectColumnValuesToBeInSet(column="qtype", value_set=list(params.qtypes)),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        E.ExpectColumnValuesToBeInSet(
            column="gif_id", value_set=gif_ids, description="question is about a known GIF"
        ),
    ]


def reason_of(expectation_type: str, column: str | None) -> str:
    """Quarantine reason for one expectation, e.g. ``expect_column_values_to_be_unique:qa_id``."""
    return f"{expectation_type}:{column}" if column else expectation_type


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only data docs site is a folder under the stage output.

    The default ephemeral context configures a docs site in a fresh temp directory; passing our
    own config keeps every file the stage writes inside ``out_dir`` and turns off progress bars
    (they would flood the DVC/Prefect logs).
    """
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites={
            DATA_DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suite(
    context: Any,
    table: str,
    frame: pd.DataFrame,
    id_column: str,
    expectations: list[gx.expectations.Expectation],
    run_id: RunIdentifier,
) -> Any:
    """Validate one table with one suite and return GX's ExpectationSuiteValidationResult."""
    reasons = [reason_of(e.expectation_type, getattr(e, "column", None)) for e in expectations]
    duplicated = [r for r, n in Counter(reasons).items() if n > 1]
    if duplicated:
        # Quarantine reasons must name one expectation each, or counts would merge silently.
        raise ValueError(f"{table} suite has ambiguous reasons: {duplicated}")

    asset = context.data_sources.add_pandas(f"{table}_source").add_dataframe_asset(table)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{table}_whole")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{table}_suite"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{table}_validation", data=batch_definition, suite=suite)
    )
    result_format = {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": [ROW_COLUMN, id_column],
        # The pandas "query" is a long df.filter(...) string per expectation; nobody reads it.
        "return_unexpected_index_query": False,
    }
    result = definition.run(
        batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id
    )
    broken = [
        r.expectation_config.type
        for r in result.results
        if (r.exception_info or {}).get("raised_exception")
    ]
    if broken:
        # An expectation that crashed has not checked anything: never read that as a pass.
        raise RuntimeError(f"GX expectations raised on {table}: {broken}")
    return result


def _failures(result: Any) -> tuple[dict[int, list[str]], dict[str, int]]:
    """Failing row positions -> reasons, and the failing-row count per expectation."""
    by_row: dict[int, list[str]] = defaultdict(list)
    counts: dict[str, int] = {}
    for r in result.results:
        config = r.expectation_config
        reason = reason_of(config.type, config.kwargs.get("column"))
        rows = sorted({int(i[ROW_COLUMN]) for i in r.result.get("unexpected_index_list") or []})
        counts[reason] = len(rows)
        for row in rows:
            by_row[row].append(reason)
    return dict(by_row), counts


def _quarantine_rows(
    table: str, frame: pd.DataFrame, id_column: str, by_row: dict[int, list[str]]
) -> list[dict[str, Any]]:
    ids = frame[id_column].tolist()
    return [
        {
            "table": table,
            "row_id": None if pd.isna(ids[row]) else str(ids[row]),
            "row_index": row,
            "reason": reason,
        }
        for row in sorted(by_row)
        for reason in sorted(set(by_row[row]))
    ]


def _table_metrics(
    n_rows: int, failing_rows: int, clean_rows: int, counts: dict[str, int], success: bool
) -> dict[str, Any]:
    return {
        "rows": n_rows,
        "failing_rows": failing_rows,
        "failing_share": failing_rows / n_rows if n_rows else 0.0,
        "clean_rows": clean_rows,
        "gx_success": bool(success),
        "expectations": dict(sorted(counts.items())),
    }


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table} table is missing columns {missing}")
    if ROW_COLUMN in frame.columns:
        raise ValueError(f"{table} table must not carry the reserved column {ROW_COLUMN!r}")


def _failure_message(table: str, metrics: dict[str, Any], threshold: float) -> str:
    failing = [(reason, n) for reason, n in metrics["expectations"].items() if n]
    top = sorted(failing, key=lambda item: (-item[1], item[0]))[:5]
    listed = ", ".join(f"{reason} ({n})" for reason, n in top) or "none"
    return (
        f"{table}: failing share {metrics['failing_share']:.2%} "
        f"({metrics['failing_rows']}/{metrics['rows']} rows) > max_failing_share "
        f"{threshold:.2%}; top failing expectations: {listed}"
    )


# what GX stamps on a result besides the verdicts: random ids and the clock
_RUN_KEYS = {"id", "validation_id", "run_id", "run_time", "validation_time", "ge_load_time"}


def _without_ids(node: object) -> object:
    """GX's result dict minus its random ids and times: the same tables then give the same
    bytes."""
    if isinstance(node, dict):
        return {k: _without_ids(v) for k, v in node.items() if k not in _RUN_KEYS}
    if isinstance(node, list):
        return [_without_ids(v) for v in node]
    return node


def _qa_reasons(
    manifest: pd.DataFrame, manifest_ok: np.ndarray, qa: pd.DataFrame, qa_bad: dict
) -> tuple[dict[int, list[str]], np.ndarray]:
    """Each failing QA row's reasons, with `gif_quarantined` for rows whose GIF was
    quarantined; and the mask of those orphaned rows."""
    # A GIF id is usable only if no manifest row carrying it was quarantined (a duplicated id
    # quarantines both rows, so neither copy can stand for it).
    quarantined_ids = set(manifest.loc[~manifest_ok, "gif_id"].dropna().astype(str))
    orphaned = qa["gif_id"].astype("string").isin(quarantined_ids).fillna(False).to_numpy()
    qa_reasons: dict[int, list[str]] = {row: list(r) for row, r in qa_bad.items()}
    for row in map(int, orphaned.nonzero()[0]):
        qa_reasons.setdefault(row, []).append(GIF_QUARANTINED)
    return qa_reasons, orphaned


def _numbered(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each row's index as a column, so a failure names its row."""
    return table.assign(**{ROW_COLUMN: range(len(table))})


def _write_outputs(
    out_dir: Path,
    clean_manifest: pd.DataFrame,
    clean_qa: pd.DataFrame,
    quarantine: pd.DataFrame,
    manifest_result,
    qa_result,
) -> None:
    """The stage's tables and the GX results (without run ids: same inputs, same bytes)."""
    clean_manifest.to_parquet(out_dir / MANIFEST_CLEAN_FILE, index=False)
    clean_qa.to_parquet(out_dir / QA_CLEAN_FILE, index=False)
    quarantine.to_parquet(out_dir / VALIDATE_QUARANTINE_FILE, index=False)
    results_json = {
        "manifest": _without_ids(manifest_result.to_json_dict()),
        "qa": _without_ids(qa_result.to_json_dict()),
    }
    (out_dir / "gx_results.json").write_text(json.dumps(results_json, indent=1, default=str))


def run_validation(
    manifest: pd.DataFrame, qa: pd.DataFrame, params: ValidateParams, out_dir: Path
) -> ValidationResult:
    """Validate both tables, write clean tables, quarantine, GX results and data docs.

    Raises :class:`ValidationFailed` (after writing) when a table's failing share passes
    ``params.max_failing_share``. QA rows whose GIF was quarantined are dropped with reason
    ``gif_quarantined``; they count against the manifest's share, not the QA table's, so one
    bad GIF does not trip the threshold twice.
    """
    _require_columns(manifest, MANIFEST_COLUMNS, "manifest")
    _require_columns(qa, QA_COLUMNS, "qa")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = manifest.reset_index(drop=True)
    qa = qa.reset_index(drop=True)

    docs_dir = out_dir / "data_docs"
    # The site index lists every validation page found on disk: start from an empty folder so
    # a rerun by hand does not show stale runs next to this one.
    shutil.rmtree(docs_dir, ignore_errors=True)
    context = _context(docs_dir)
    run_id = RunIdentifier(run_name="gifqa-validate")

    manifest_result = _run_suite(
        context, "manifest", _numbered(manifest), "gif_id", manifest_expectations(params), run_id
    )
    manifest_bad, manifest_counts = _failures(manifest_result)
    manifest_ok = ~manifest.index.isin(list(manifest_bad))
    clean_manifest = manifest[manifest_ok].reset_index(drop=True)

    known_ids = sorted({str(g) for g in manifest["gif_id"].dropna()})
    qa_result = _run_suite(
        context, "qa", _numbered(qa), "qa_id", qa_expectations(params, known_ids), run_id
    )
    qa_bad, qa_counts = _failures(qa_result)

    qa_reasons, orphaned = _qa_reasons(manifest, manifest_ok, qa, qa_bad)
    qa_ok = ~qa.index.isin(list(qa_reasons))
    clean_qa = qa[qa_ok].reset_index(drop=True)

    quarantine = pd.DataFrame(
        _quarantine_rows("manifest", manifest, "gif_id", manifest_bad)
        + _quarantine_rows("qa", qa, "qa_id", qa_reasons),
        columns=list(VALIDATE_QUARANTINE_COLUMNS),
    ).astype({"table": "string", "row_id": "string", "row_index": "int64", "reason": "string"})

    metrics: dict[str, Any] = {
        "manifest": _table_metrics(
            len(manifest),
            len(manifest_bad),
            len(clean_manifest),
            manifest_counts,
            manifest_result.success,
        ),
        "qa": _table_metrics(len(qa), len(qa_bad), len(clean_qa), qa_counts, qa_result.success),
        "max_failing_share": params.max_failing_share,
    }
    metrics["qa"]["gif_quarantined_rows"] = int(orphaned.sum())
    over = [t for t in ("manifest", "qa") if metrics[t]["failing_share"] > params.max_failing_share]
    metrics["passed"] = not over

    _write_outputs(out_dir, clean_manifest, clean_qa, quarantine, manifest_result, qa_result)
    # GX renders both suites and both validation results from its in-memory stores.
    context.build_data_docs(site_names=[DATA_DOCS_SITE])

    if over:
        raise ValidationFailed(
            "validation failed -- "
            + "; ".join(_failure_message(t, metrics[t], params.max_failing_share) for t in over)
            + f" (report: {docs_dir / 'index.html'})"
        )
    return ValidationResult(clean_manifest, clean_qa, quarantine, metrics)
