"""Drift reports of made-to-drift corpora against a trained project's data, as the retrain
flow computes them against the champion's.

The reference is the project's clean training data (outputs/validate) with its index's CLIP
embeddings. Each current corpus is fresh ShapesWorld from another seed, ingested and turned
into questions as the pipeline does, and embedded by the project's CLIP encoder:

- ``same``: as generated (nothing may drift);
- ``one_colour``: every object red (the GIFs' palettes and the descriptions' colour words);
- ``long``: 64 frames per GIF instead of 16;
- ``one_colour_long``: both.

Writes ``<out>/<corpus>/drift.json`` (and ``drift.html`` with --html) and prints the
per-feature table.

    python bench/drift_report.py --project <a make-demo clone> [--n-gifs 200] [--html one_colour]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import pandas as pd  # noqa: E402

from gifqa_model.core.artifacts import CLIP_DIR, out_dir  # noqa: E402
from gifqa_model.core.config import ShapesParams, load_params  # noqa: E402
from gifqa_model.data.shapesworld import COLORS, generate_corpus  # noqa: E402
from gifqa_model.monitor.drift import (  # noqa: E402
    data_profile,
    drift_against,
    embed_gifs,
    folder_tables,
    index_embeddings,
    write_report,
)
from gifqa_model.stages import clean_tables  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "drift"
GCT = 13  # a GIF's global colour table starts after its header and screen descriptor


def one_colour(corpus: Path, colour: str = "red") -> None:
    """Every object `colour`: each GIF's palette entries and each description's colour words
    (ShapesWorld's palette is the background, then COLORS in order)."""
    rgb = bytes(COLORS[colour])
    for gif in (corpus / "gifs").glob("*.gif"):
        data = bytearray(gif.read_bytes())
        for k in range(1, len(COLORS) + 1):
            data[GCT + 3 * k : GCT + 3 * k + 3] = rgb
        gif.write_bytes(bytes(data))
    table = pd.read_csv(corpus / "descriptions.tsv", sep="\t")
    words = re.compile(r"\b(" + "|".join(COLORS) + r")\b")
    table["description"] = table.description.str.replace(words, colour, regex=True)
    table.to_csv(corpus / "descriptions.tsv", sep="\t", index=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--n-gifs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)  # neither shapes.seed nor benchmark.seed
    ap.add_argument("--html", nargs="*", default=["one_colour"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    root = args.project.resolve()
    params = load_params(root / "params.yaml")
    manifest, qa = clean_tables(root)
    reference = data_profile(manifest, qa)
    index = out_dir("index", root)
    ref_emb = index_embeddings(index, manifest)
    corpora = {
        "same": {},
        "one_colour": {},
        "long": {"n_frames": 64},
        "one_colour_long": {"n_frames": 64},
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, change in corpora.items():
            folder = Path(tmp) / name
            generate_corpus(folder, ShapesParams(n_gifs=args.n_gifs, seed=args.seed, **change))
            if name.startswith("one_colour"):
                one_colour(folder)
            cur_manifest, cur_qa = folder_tables(folder, params.qa, Path(tmp) / f"{name}-ingest")
            emb = {
                **ref_emb,
                **embed_gifs(cur_manifest, index / CLIP_DIR, params.index.frames_per_gif),
            }
            result = drift_against(reference, data_profile(cur_manifest, cur_qa), params.drift, emb)
            written = write_report(result, args.out / name)
            if name not in args.html and len(written) > 1:
                written[1].unlink()
            print(f"{name}: {result.action} ({result.reason})")
            for feature, f in result.features.items():
                rows.append(
                    {
                        "corpus": name,
                        "feature": feature,
                        "method": f.method,
                        "score": round(f.score, 4),
                        "threshold": f.threshold,
                        "drifted": f.drifted,
                    }
                )
            rows.append(
                {
                    "corpus": name,
                    "feature": "(share → action)",
                    "method": "",
                    "score": result.share,
                    "threshold": None,
                    "drifted": result.action,
                }
            )
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
