"""recall@10 of text → GIF search on a pipeline's outputs: clauses of the test split's
descriptions as queries, the test GIFs as the corpus (a GIF is relevant when its own
description has the clause). The index stage reports the same figure for new runs
(metrics/index.json: search_recall_at_10); this rebuilds it from older outputs too.

    python bench/search_recall.py --project <a make-demo clone> [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gifqa_model.core.artifacts import (  # noqa: E402
    CLIP_DIR,
    EMB_FILE,
    FRAMES_FILE,
    out_dir,
)
from gifqa_model.index.clip import ClipEncoder  # noqa: E402
from gifqa_model.index.search import GifSearch, clause_recall  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    index = out_dir("index", args.project)
    manifest = pd.read_parquet(out_dir("validate", args.project) / "manifest_clean.parquet")
    search = GifSearch.build(
        np.load(index / EMB_FILE), pd.read_parquet(index / FRAMES_FILE), manifest
    )
    encoder = ClipEncoder.load(index / CLIP_DIR)
    metrics = clause_recall(search, encoder, manifest[["gif_id", "description"]])
    metrics["random_recall_at_10"] = round(10 / metrics["n_gifs"], 4)
    example = "a red circle is moving left"
    metrics["example"] = {"query": example, "top3": search.search([example], 3, "test", encoder)[0]}
    print(json.dumps(metrics, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
