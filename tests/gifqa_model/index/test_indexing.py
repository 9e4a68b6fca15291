"""The index stage's corpus decode: parallel workers give the same frames, in manifest order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gifqa_model.core.config import ShapesParams
from gifqa_model.data.shapesworld import generate_corpus
from gifqa_model.index.indexing import decode_corpus


def test_parallel_decode_equals_serial(tmp_path: Path) -> None:
    generate_corpus(tmp_path, ShapesParams(n_gifs=6, workers=1))
    paths = sorted((tmp_path / "gifs").glob("*.gif"))
    manifest = pd.DataFrame(
        {"gif_id": [p.stem for p in paths], "path": [str(p) for p in paths], "n_frames": 16}
    )
    serial, table_a = decode_corpus(manifest, 8, 32, workers=1)
    parallel, table_b = decode_corpus(manifest, 8, 32, workers=2)
    assert serial.shape == (6 * 8, 32, 32, 3)
    np.testing.assert_array_equal(serial, parallel)
    pd.testing.assert_frame_equal(table_a, table_b)
