"""Training curves: batched to the flow's MLflow run (rank 0 only) and written as CSV."""

from __future__ import annotations

import csv
import time
from pathlib import Path


class MlflowCurveLogger:
    """Logs per-step curves to an existing MLflow run (the flow's) from rank 0 only.

    Points are sent in batches (every `flush_every` steps and at `flush`): one `log_batch` to
    a SQLite store takes ~8 ms, 4 % of a tiny training step when sent per step.
    """

    def __init__(self, run_id: str | None, rank: int, flush_every: int = 100) -> None:
        self.run_id = run_id if rank == 0 else None
        self.client = None
        self.flush_every = flush_every
        self.pending: list = []
        if self.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        if step % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        """Send what is pending (MLflow takes at most 1000 metrics per batch)."""
        while self.client is not None and self.pending:
            chunk, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)


def write_curve(curve: list[dict], path: Path) -> None:
    keys = sorted({k for p in curve for k in p}, key=lambda k: (k != "step", k))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(curve)
