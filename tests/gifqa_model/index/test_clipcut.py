"""CLIP-Cut: the FAISS group index, per-GIF search, time-ordered keyframes, the CLIP encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gifqa_model.index.clip import ClipEncoder, ClipParams, build_clip, fit_clip
from gifqa_model.index.clipcut import (
    GroupLayout,
    IndexParams,
    build_index,
    group_embeddings,
    keyframes_for,
    retrieve_keyframes,
    search_gif,
    spread_choice,
    uniform_frames,
)

# the ViT tower: its final patch tokens are the cached ones
VIT = {"model_name": "gifqa-tiny-vit", "token_layer": None}


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_layout_groups_and_offsets():
    layout = GroupLayout.from_counts(np.array([5, 4]), group_size=2)
    assert layout.group_counts.tolist() == [3, 2]
    assert layout.group_offsets.tolist() == [0, 3]
    assert layout.frame_offsets.tolist() == [0, 5]
    assert layout.group_frames(0, 2) == [4]


def test_search_stays_inside_its_gif_and_keyframes_are_time_ordered():
    # two GIFs of 6 frames; GIF 1's best match for the query is its last group,
    # GIF 0 holds an even better match that must not leak into GIF 1's answer
    emb = np.tile(_unit([0, 0, 0, 1]), (12, 1))
    emb[0:2] = _unit([1, 0, 0, 0])  # GIF 0, group 0: perfect match
    emb[10:12] = _unit([1, 0.5, 0, 0])  # GIF 1, group 2: best within GIF 1
    emb[6:8] = _unit([0.5, 0, 0, 1])  # GIF 1, group 0: second best
    layout = GroupLayout.from_counts(np.array([6, 6]), group_size=2)
    params = IndexParams(group_size=2, top_k=2)
    index = build_index(group_embeddings(emb, layout), params)
    ids, scores = search_gif(index, _unit([1, 0, 0, 0]), 3, 6, k=2)
    assert set(ids.tolist()) <= {3, 4, 5}
    assert ids[0] == 5 and scores[0] >= scores[-1]
    frames = retrieve_keyframes(index, layout, np.array([1]), _unit([[1, 0, 0, 0]]), params)[0]
    assert frames == [0, 1, 4, 5]


def test_temporal_spread_parts_near_ties_and_keeps_clear_winners():
    # an object on screen all along: every group scores about the same, and plain top-k
    # takes two neighbours; the spread takes the far end of the GIF instead
    ties = np.array([0.90, 0.91, 0.89, 0.90, 0.88, 0.90, 0.89, 0.90], dtype=np.float32)
    assert sorted(spread_choice(ties, 2, 0.0).tolist()) == [0, 1]
    assert sorted(spread_choice(ties, 2, 0.05).tolist()) == [1, 7]
    # an object that disappears half way: the visible groups win by far more than the bonus
    gone = np.array([0.90, 0.91, 0.89, 0.90, 0.50, 0.50, 0.50, 0.50], dtype=np.float32)
    assert sorted(spread_choice(gone, 2, 0.05).tolist()) == [1, 3]
    assert sorted(spread_choice(gone, 9, 0.05).tolist()) == list(range(8))
    # groups an IVF probe did not reach (no score) are never chosen
    assert spread_choice(np.array([0.5, -np.inf, 0.4, -np.inf]), 3, 0.05).tolist() == [0, 2]
    # through the index: the same choice, frames in time order
    emb = np.stack([_unit([1, s, 0, 0]) for s in np.linspace(0.30, 0.31, 6)]).repeat(2, 0)
    layout = GroupLayout.from_counts(np.array([12]), group_size=2)
    params = IndexParams(group_size=2, top_k=2, temporal_spread=0.05)
    index = build_index(group_embeddings(emb, layout), params)
    frames = retrieve_keyframes(index, layout, np.array([0]), _unit([[1, 0, 0, 0]]), params)[0]
    assert frames == [0, 1, 10, 11]
    plain = retrieve_keyframes(
        index, layout, np.array([0]), _unit([[1, 0, 0, 0]]), IndexParams(group_size=2, top_k=2)
    )[0]
    assert plain == [0, 1, 2, 3]


def test_ivf_index_path_also_filters():
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(400, 8)))
    layout = GroupLayout.from_counts(np.full(100, 4), group_size=1)
    params = IndexParams(group_size=1, top_k=3, ivf_min_groups=100, ivf_nlist=8, ivf_nprobe=8)
    index = build_index(group_embeddings(emb, layout), params)
    ids, _ = search_gif(index, emb[41], 40, 44, k=3)
    assert ids[0] == 41 and set(ids.tolist()) <= set(range(40, 44))


def test_short_gif_keyframes_padded_in_time_order():
    layout = GroupLayout.from_counts(np.array([3]), group_size=2)
    assert keyframes_for(layout, 0, np.array([1]), 4) == [2, 2, 2, 2]
    assert keyframes_for(layout, 0, np.array([0, 1]), 4) == [0, 0, 1, 2]
    assert uniform_frames(16, 4) == [0, 5, 10, 15]


@pytest.mark.parametrize("bf16", [False, True])
def test_clip_encoder_fit_embed_save_load(tmp_path, bf16):
    params = ClipParams(
        **VIT, fit_steps=3, fit_batch_size=4, token_pool=2, fit_bf16=bf16, fit_scene_weight=0.0
    )
    enc = build_clip(params)
    frames = np.random.default_rng(0).integers(0, 255, size=(12, 64, 64, 3), dtype=np.uint8)
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    m = fit_clip(
        enc,
        frames,
        [(0, 3), (3, 6), (6, 9), (9, 12)],
        ["a red circle", "a blue square", "two green stars", "a white diamond"],
        params,
    )
    assert m["clip_fit_steps"] == 3 and np.isfinite(m["clip_fit_loss_last"])
    assert all(v.dtype != torch.bfloat16 for v in enc.model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in enc.model.state_dict().items())
    tokens, pooled = enc.embed_frames(frames)
    assert tokens.shape == (12, 16, enc.token_width) and tokens.dtype == np.float16
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-4)
    enc.save(tmp_path / "clip")
    again = ClipEncoder.load(tmp_path / "clip")
    t2, p2 = again.embed_frames(frames)
    assert np.allclose(pooled, p2, atol=1e-5)
    q = again.embed_texts(["what is the color of the circle ?"])
    assert q.shape == (1, pooled.shape[1])


def test_cnn_tower_tokens_come_from_its_feature_map(tmp_path):
    params = ClipParams(
        model_name="gifqa-tiny-cnn",
        token_layer="layer2",
        token_pool=1,
        fit_steps=2,
        fit_batch_size=8,
        fit_scene_weight=0.0,
    )
    enc = build_clip(params)
    frames = np.random.default_rng(0).integers(0, 255, size=(8, 64, 64, 3), dtype=np.uint8)
    fit_clip(enc, frames, [(0, 4), (4, 8)], ["a red circle", "two blue squares"], params)
    tokens, pooled = enc.embed_frames(frames)
    # layer2 of the ResNet tower is an 8x8 grid at 64 px: one token per cell
    assert tokens.shape == (8, 64, enc.token_width)
    enc.save(tmp_path / "clip")
    again = ClipEncoder.load(tmp_path / "clip")
    t2, p2 = again.embed_frames(frames)
    assert np.allclose(pooled, p2, atol=1e-5) and np.allclose(tokens, t2, atol=1e-2)


def test_cnn_tower_without_a_token_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="token_layer"):
        build_clip(ClipParams(model_name="gifqa-tiny-cnn", token_layer=None))


def test_fit_with_the_dense_token_loss_learns_what_each_token_cell_shows():
    from gifqa_model.data.gifs import decode_frames
    from gifqa_model.data.scene import frame_scene
    from gifqa_model.data.shapesworld import ShapesParams, generate_example

    examples = [generate_example(i, ShapesParams(n_gifs=4)) for i in range(4)]
    frames, scene = [], []
    for ex in examples:
        with_idx = [0, 5, 10, 15]
        frames.append(decode_frames(ex.gif_bytes, indices=with_idx, size=64))
        truth = ex.ground_truth
        scene += [frame_scene(truth["frames"][t], truth["groups"], 64, 8) for t in with_idx]
    frames, scene = np.concatenate(frames), np.stack(scene)
    params = ClipParams(
        **VIT, fit_steps=40, fit_batch_size=8, fit_lr=3e-3, token_pool=1, fit_scene_weight=1.0
    )
    enc = build_clip(params)
    m = fit_clip(
        enc,
        frames,
        [(0, 4), (4, 8), (8, 12), (12, 16)],
        [ex.description for ex in examples],
        params,
        scene=scene,
    )
    assert m["clip_fit_scene_loss_last"] < 0.5 * m["clip_fit_scene_loss_first"]
    with pytest.raises(ValueError, match="scene targets"):
        fit_clip(build_clip(params), frames, [(0, 4), (4, 8)], ["a", "b"], params)


def test_the_clip_fit_stops_with_an_error_past_fit_minutes(monkeypatch) -> None:
    """`clip.fit_minutes` is a hang guard: past it the fit raises (naming the param and the
    step) instead of returning a shorter fit, whose tokens would be another encoder's."""
    import gifqa_model.index.clip as clip_module

    params = ClipParams(
        **VIT, fit_steps=50, fit_batch_size=4, token_pool=2, fit_scene_weight=0.0, fit_minutes=1
    )
    enc = build_clip(params)
    frames = np.random.default_rng(0).integers(0, 255, size=(8, 64, 64, 3), dtype=np.uint8)
    readings = iter(range(0, 10**6, 20))  # a clock 20 s further on at each reading

    monkeypatch.setattr(clip_module.time, "time", lambda: float(next(readings)))
    with pytest.raises(TimeoutError, match=r"clip.fit_minutes \(1.0\) passed at step \d+ of 50"):
        fit_clip(enc, frames, [(0, 4), (4, 8)], ["a red circle", "two blue squares"], params)
