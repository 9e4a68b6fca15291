"""GifQAModel and MVM on tiny configs: real modules, milliseconds."""

from __future__ import annotations

import pytest
import torch

from gifqa_model.model.losses import MVMParams, gifqa_loss, keep_indices
from gifqa_model.model.modeling import Frames, GifQAConfig, GifQAModel, distinct_rows
from gifqa_model.model.text import (
    decode_answers,
    encode_prompts,
    encode_train_batch,
    match_form,
    train_word_tokenizer,
)
from tests.helpers import tiny_config

QS = ["what is the color of the circle ?", "how many squares grow ?"]
AS = ["red", "two"]


def _tiny():
    tok = train_word_tokenizer(QS + AS)
    torch.manual_seed(0)
    cfg = tiny_config(vision_width=32, vocab_size=len(tok), dropout=0.0)
    return GifQAModel(cfg), tok


def test_batch_encoding_lays_out_bos_question_sep_answer_eos():
    tok = train_word_tokenizer(QS + AS)
    ids, mask, labels = encode_train_batch(tok, QS, AS)
    words = [
        tok.convert_ids_to_tokens(r[m.bool()].tolist()) for r, m in zip(ids, mask, strict=True)
    ]
    assert words[0] == ["[BOS]", *QS[0].split(), "[SEP]", "red", "[EOS]"]
    assert words[1] == ["[BOS]", *QS[1].split(), "[SEP]", "two", "[EOS]"]
    # labels are the answer and EOS only; the shorter row is right-padded
    assert tok.convert_ids_to_tokens(labels[0][labels[0] != -100].tolist()) == ["red", "[EOS]"]
    assert mask[1].sum() < mask.shape[1] and mask[1, -1] == 0
    prompts, pmask = encode_prompts(tok, QS)  # left-padded: every prompt ends in SEP
    assert (prompts[:, -1] == tok.sep_token_id).all() and pmask[1, 0] == 0


def test_visual_tokens_shape_and_time_order_matters():
    model, _ = _tiny()
    feats = torch.randn(3, 4, 5, 32)
    vis = model.encode_visual(Frames.dense(feats))
    assert vis.shape == (3, 4 * 2, 32)
    # the frame-position embedding makes the same frames at other times look different
    later = model.encode_visual(Frames.dense(feats, torch.arange(4, 8).expand(3, 4)))
    assert not torch.allclose(vis, later)


def test_shared_frames_give_the_same_tokens_as_dense_frames():
    model, _ = _tiny()
    model.eval()
    distinct = torch.randn(6, 5, 32)
    times = torch.tensor([0, 1, 2, 3, 4, 5])
    index = torch.tensor([[0, 1, 2, 3], [2, 3, 4, 5]])  # two questions share frames 2 and 3
    shared = model.encode_visual(Frames(distinct, times, index))
    dense = model.encode_visual(Frames.dense(distinct[index], times[index]))
    assert torch.allclose(shared, dense, atol=1e-5)


def test_mvm_masked_pass_sees_fewer_tokens_and_has_gradient():
    model, tok = _tiny()
    ids, mask, labels = encode_train_batch(tok, QS, AS)
    feats = torch.randn(2, 4, 5, 32)
    out = gifqa_loss(
        model,
        Frames.dense(feats),
        ids,
        mask,
        labels,
        MVMParams(weight=1.0),
        torch.Generator().manual_seed(0),
    )
    assert 0.1 <= out.mask_ratio <= 0.7
    assert out.n_visual_kept < out.n_visual
    assert float(out.mvm_loss) > 0  # the masked pass really differs from the unmasked one
    out.loss.backward()
    assert model.query_tokens.grad is not None and model.query_tokens.grad.abs().sum() > 0


def test_visual_states_alone_equal_those_of_the_full_pass():
    # MVM's masked pass runs on visual tokens only: valid because the LM is causal and the
    # visual tokens come first, so the question after them cannot change their states
    model, tok = _tiny()
    model.eval()
    ids, mask, _ = encode_train_batch(tok, QS, AS)
    visual = model.encode_visual(Frames.dense(torch.randn(2, 4, 5, 32)))
    _, full = model.run_lm(visual, ids, mask)
    positions = torch.arange(visual.shape[1]).expand(2, -1)
    alone = model.visual_states(visual, positions, n_visual_slots=visual.shape[1])
    assert torch.allclose(alone, full[:, : visual.shape[1]], atol=1e-5)
    # and a masked sequence (kept tokens at their own positions) really gives other states
    keep = keep_indices(
        2, visual.shape[1], 0.5, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    masked = model.visual_states(
        visual.gather(1, keep[..., None].expand(-1, -1, 32)), keep, n_visual_slots=visual.shape[1]
    )
    target = full.gather(1, keep[..., None].expand(-1, -1, full.shape[-1]))
    assert not torch.allclose(masked, target, atol=1e-3)


def test_a_shared_visual_prefix_gives_the_logits_of_the_full_rows():
    # training runs each distinct keyframe sequence through the LM once and hands its keys and
    # values to every question that follows it; the answer logits must not change
    model, tok = _tiny()
    model.eval()
    qs, answers = QS * 2, AS * 2
    ids, mask, _ = encode_train_batch(tok, qs, answers)
    mask[0, -1] = 0  # a padded row too
    frames = Frames(torch.randn(4, 5, 32), torch.arange(4), torch.tensor([[0, 1], [2, 3]] * 2))
    visual = model.encode_visual(frames)
    full_logits, full_hidden = model.run_lm(visual, ids, mask)
    rows, sequence = distinct_rows(frames.index)
    logits, prefix = model.run_lm_shared(visual[rows], sequence, ids, mask)
    assert torch.allclose(logits, full_logits[:, -ids.shape[1] :], atol=1e-5)
    assert torch.allclose(prefix, full_hidden[rows, : visual.shape[1]], atol=1e-5)


def test_cached_decoding_gives_the_tokens_of_recomputing_every_row():
    # generate runs each distinct visual prefix once and then one token at a time on the
    # cache; greedy decoding by re-running the LM on the whole row per token must agree
    model, tok = _tiny()
    model.eval()
    with torch.no_grad():  # a random-init LM says one token whatever it reads: spread it out
        for p in model.parameters():
            p.normal_(0, 0.2)
    prompts, pmask = encode_prompts(tok, QS * 2)  # left-padded rows
    frames = Frames(torch.randn(4, 5, 32), torch.arange(4), torch.tensor([[0, 1], [2, 3]] * 2))
    got = model.generate(frames, prompts, pmask, eos_id=-1, max_new_tokens=4)
    visual = model.encode_visual(frames)
    ids, mask, want = prompts, pmask, [[] for _ in range(len(prompts))]
    for _ in range(4):
        nxt = model.run_lm(visual, ids, mask)[0][:, -1].argmax(-1)
        for row, t in enumerate(nxt.tolist()):
            want[row].append(t)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    assert got == want and all(len(r) == 4 for r in got)
    assert len({tuple(r) for r in got}) > 1  # not one token everywhere: the test can fail


def test_questions_sharing_keyframes_share_one_masked_pass():
    rows, sequence = distinct_rows(torch.tensor([[3, 4], [1, 2], [3, 4], [1, 2], [5, 6]]))
    assert rows.tolist() == [0, 1, 4] and sequence.tolist() == [0, 1, 0, 1, 2]
    model, tok = _tiny()
    qs, answers = QS * 2, AS * 2
    ids, mask, labels = encode_train_batch(tok, qs, answers)
    frames = Frames(torch.randn(4, 5, 32), torch.arange(4), torch.tensor([[0, 1]] * 3 + [[2, 3]]))
    out = gifqa_loss(
        model, frames, ids, mask, labels, MVMParams(weight=1.0), torch.Generator().manual_seed(0)
    )
    assert out.n_visual_kept < out.n_visual and float(out.mvm_loss) > 0
    out.loss.backward()
    assert model.query_tokens.grad.abs().sum() > 0


def test_mvm_off_is_plain_cross_entropy():
    model, tok = _tiny()
    model.eval()
    ids, mask, labels = encode_train_batch(tok, QS, AS)
    frames = Frames.dense(torch.randn(2, 4, 5, 32))
    out = gifqa_loss(model, frames, ids, mask, labels, MVMParams(weight=0.0))
    assert out.n_visual_kept == out.n_visual and float(out.mvm_loss) == 0.0
    assert torch.isclose(out.loss, out.answer_loss)


def test_keep_indices_sorted_and_ratio():
    keep = keep_indices(4, 20, 0.5, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert keep.shape == (4, 10)
    assert torch.all(keep[:, 1:] > keep[:, :-1])


def _overfit_and_generate(model, tok, tmp_path, mvm_weight: float) -> None:
    """Overfit the two questions, then generate both answers, before and after save → load."""
    ids, mask, labels = encode_train_batch(tok, QS, AS)
    feats = torch.randn(2, 4, 5, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = gifqa_loss(
            model,
            Frames.dense(feats),
            ids,
            mask,
            labels,
            MVMParams(weight=mvm_weight),
            torch.Generator().manual_seed(0),
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    p, pm = encode_prompts(tok, QS)
    assert decode_answers(tok, model.generate(Frames.dense(feats), p, pm, tok.eos_token_id)) == AS
    model.save_pretrained(tmp_path / "m", tok)
    again = GifQAModel.from_pretrained(tmp_path / "m")
    assert decode_answers(tok, again.generate(Frames.dense(feats), p, pm, tok.eos_token_id)) == AS


def test_overfits_two_questions_and_generates(tmp_path):
    model, tok = _tiny()
    _overfit_and_generate(model, tok, tmp_path, mvm_weight=0.0)


def test_qformer_cross_attends_every_other_layer_and_round_trips(tmp_path):
    model, tok = _tiny()  # 2 Q-Former layers, qformer_cross_every 2 (the default); it trains
    # and generates in test_overfits_two_questions_and_generates
    # BLIP-2's layout: the first layer reads the frame, the second only refines the queries
    assert [layer.has_cross_attention for layer in model.qformer.encoder.layer] == [True, False]
    model.save_pretrained(tmp_path / "m", tok)
    again = GifQAModel.from_pretrained(tmp_path / "m")
    assert [layer.has_cross_attention for layer in again.qformer.encoder.layer] == [True, False]


def test_match_form():
    assert match_form(" The Red ") == "red"
    assert match_form("top-left") == "top left"


def _conditioned():
    tok = train_word_tokenizer(QS + AS)
    torch.manual_seed(0)
    cfg = tiny_config(
        vision_width=32,
        vocab_size=len(tok),
        dropout=0.0,
        question_conditioned=True,
        token_positions=True,
        n_tokens=5,
    )
    return GifQAModel(cfg), tok


def test_question_conditioned_qformer_reads_the_question_not_the_answer():
    model, tok = _conditioned()
    model.eval()
    frames = Frames.dense(torch.randn(2, 4, 5, 32))
    ids, mask, labels = encode_train_batch(tok, [QS[0], QS[0]], ["red", "two"])
    question = mask * (labels == -100)
    vis = model.encode_visual(frames, ids, question)
    assert vis.shape == (2, 4 * 2, 32)
    # same frames and question, different answers: the answer never reaches the Q-Former
    same = Frames.dense(frames.tokens.reshape(2, 4, 5, 32)[[0, 0]])
    vis_same = model.encode_visual(same, ids, question)
    assert torch.allclose(vis_same[0], vis_same[1], atol=1e-5)
    # another question about the same frames gives other visual tokens
    ids2, mask2, labels2 = encode_train_batch(tok, [QS[1], QS[1]], AS)
    assert not torch.allclose(vis_same, model.encode_visual(same, ids2, mask2 * (labels2 == -100)))
    with pytest.raises(ValueError, match="question"):
        model.encode_visual(frames)


def test_question_conditioned_trains_and_generates(tmp_path):
    model, tok = _conditioned()
    _overfit_and_generate(model, tok, tmp_path, mvm_weight=1.0)
    assert model.question_proj.weight.grad.abs().sum() > 0
    assert model.token_pos.grad.abs().sum() > 0


def test_grid_positions_tell_every_cell_apart():
    from gifqa_model.model.modeling import grid_positions

    pos = grid_positions(16, 8)
    assert pos.shape == (16, 8)
    assert torch.cdist(pos, pos).add(torch.eye(16)).min() > 0.1  # no two cells alike
    assert not grid_positions(5, 8).any()  # not a square grid: learned from zero


def test_scene_head_loss_reaches_the_qformer_and_is_added_to_the_answer_loss():
    tok = train_word_tokenizer(QS + AS)
    torch.manual_seed(0)
    cfg = tiny_config(
        vision_width=32, vocab_size=len(tok), dropout=0.0, scene_cells=4, scene_classes=[3, 2]
    )
    model = GifQAModel(cfg)
    ids, mask, labels = encode_train_batch(tok, QS, AS)
    frames = Frames.dense(torch.randn(2, 4, 5, 32))  # 8 distinct frames
    scene = torch.zeros(8, 4, 2, dtype=torch.long)
    scene[:, 0] = torch.tensor([2, 1])  # an object in cell 0 of every frame
    scene[1] = -100  # a frame without ground truth adds nothing
    out = gifqa_loss(
        model, frames, ids, mask, labels, MVMParams(weight=0.0), scene=scene, scene_weight=0.5
    )
    assert float(out.scene_loss) > 0
    assert torch.isclose(out.loss, out.answer_loss + 0.5 * out.scene_loss)
    out.loss.backward()
    assert model.query_tokens.grad.abs().sum() > 0
    assert model.scene_head.cells.grad.abs().sum() > 0
    # no frame with ground truth: zero, not NaN
    none = model.scene_loss(model.frame_states(frames), torch.full((8, 4, 2), -100))
    assert float(none.detach()) == 0.0
    with pytest.raises(ValueError, match="scene"):
        GifQAModel(
            GifQAConfig(
                vision_width=32,
                qformer_hidden=32,
                lm_hidden=32,
                vocab_size=len(tok),
                question_conditioned=True,
                scene_cells=4,
                scene_classes=[3, 2],
                motion_gap=0,
                token_positions=False,
            )
        )


def test_a_motion_model_reads_the_change_from_the_earlier_frame():
    tok = train_word_tokenizer(QS + AS)
    torch.manual_seed(0)
    cfg = tiny_config(vision_width=32, vocab_size=len(tok), dropout=0.0, motion_gap=2)
    model = GifQAModel(cfg).eval()
    feats = torch.randn(2, 4, 5, 32)
    still = model.encode_visual(Frames.dense(feats, before=feats))
    moved = model.encode_visual(Frames.dense(feats, before=feats + torch.randn_like(feats)))
    assert not torch.allclose(still, moved)  # same frames, other motion: other tokens
    with pytest.raises(ValueError, match="earlier frames"):
        model.encode_visual(Frames.dense(feats))


def test_scene_words_tie_the_head_to_the_lm_word_embeddings():
    from gifqa_model.train.loop import scene_word_ids

    tok = train_word_tokenizer(QS + AS + ["circle square"])
    word_ids = scene_word_ids(tok, [["red", "two"], ["circle", "square"]])
    assert word_ids[1] == [
        -1,
        tok.convert_tokens_to_ids("circle"),
        tok.convert_tokens_to_ids("square"),
    ]
    with pytest.raises(ValueError, match="one known token"):
        scene_word_ids(tok, [["magenta"]])
    torch.manual_seed(0)
    cfg = tiny_config(
        vision_width=32,
        vocab_size=len(tok),
        dropout=0.0,
        scene_cells=4,
        scene_classes=[3, 3],
        scene_word_ids=word_ids,
    )
    model = GifQAModel(cfg)
    frames = Frames.dense(torch.randn(2, 4, 5, 32))
    scene = torch.zeros(8, 4, 2, dtype=torch.long)
    scene[:, 0] = torch.tensor([1, 2])  # a red square in cell 0
    loss = model.scene_loss(model.frame_states(frames), scene)
    loss.backward()
    embeddings = model.lm.get_input_embeddings().weight.grad
    # the loss moves the class words' embeddings (and no other word's) and the projection
    moved = embeddings.abs().sum(-1).nonzero().flatten().tolist()
    assert set(moved) == {i for ids in word_ids for i in ids[1:]}
    assert model.proj.weight.grad.abs().sum() > 0
