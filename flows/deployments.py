"""Deployments: the retrain flow on a schedule, served by a process worker.

`python -m flows.deployments` registers `gifqa-retrain/nightly` (cron from GIFQA_RETRAIN_CRON,
default 03:00 daily) against the Prefect API in PREFECT_API_URL and serves it from this process.
"""

from __future__ import annotations

import os

from flows.retrain import retrain


def main() -> None:
    cron = os.environ.get("GIFQA_RETRAIN_CRON", "0 3 * * *")
    retrain.serve(name="nightly", cron=cron,
                  parameters={"project_dir": os.environ.get("GIFQA_PROJECT_DIR", ".")})


if __name__ == "__main__":
    main()
