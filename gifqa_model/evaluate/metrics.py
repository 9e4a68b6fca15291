"""The evaluate stage: exact match overall and per qtype, baselines, and proof the model looks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gifqa_model.core.artifacts import PREDICTIONS_FILE
from gifqa_model.core.config import EvalParams
from gifqa_model.index.cache import FrameCache
from gifqa_model.model.modeling import Frames, GifQAModel
from gifqa_model.model.text import decode_answers, encode_prompts
from gifqa_model.qa.normalize import match_form

FrameTransform = Callable[[Frames], Frames]


@torch.no_grad()
def predict_answers(
    model: GifQAModel,
    tokenizer,
    cache: FrameCache,
    rows: np.ndarray,
    questions: list[str],
    batch_size: int = 256,
    max_answer_tokens: int = 4,
    transform: FrameTransform | None = None,
    progress: bool = False,
) -> list[str]:
    """Greedy answers for questions whose keyframes are the cache rows (B, F)."""
    model.eval()
    out: list[str] = []
    it = range(0, len(questions), batch_size)
    for i in tqdm(it, desc="answer", unit="batch", disable=not progress):
        frames = cache.frames(rows[i : i + batch_size], motion_gap=model.cfg.motion_gap)
        if transform is not None:
            frames = transform(frames)
        ids, mask = encode_prompts(tokenizer, questions[i : i + batch_size])
        gen = model.generate(frames, ids, mask, tokenizer.eos_token_id, max_answer_tokens)
        out.extend(decode_answers(tokenizer, gen))
    return out


def exact_match(pred: list[str], gold: list[str]) -> np.ndarray:
    return np.array([p == match_form(g) for p, g in zip(pred, gold, strict=True)])


def accuracy_table(correct: np.ndarray, qtypes: pd.Series) -> dict[str, float]:
    df = pd.DataFrame({"ok": correct, "qtype": qtypes.to_numpy()})
    return {k: round(float(v), 4) for k, v in df.groupby("qtype").ok.mean().items()}


def prior_answers(train_qa: pd.DataFrame) -> dict[str, str]:
    """The answer-prior baseline: the most frequent train answer per qtype."""
    norm = train_qa.assign(a=train_qa.answer.map(match_form))
    return norm.groupby("qtype").a.agg(lambda s: s.value_counts().index[0]).to_dict()


def blank_frames(frames: Frames) -> Frames:
    """Every visual token zero: what the model answers from the question alone."""
    before = None if frames.before is None else torch.zeros_like(frames.before)
    return Frames(torch.zeros_like(frames.tokens), frames.times, frames.index, before=before)


def shuffle_frames(seed: int) -> FrameTransform:
    """Each question's frames in a random order; the time stamps stay in slot order, so the
    model is shown a scrambled clip rather than the right clip with the right times. A model
    that reads motion from each frame's earlier frame gets those scrambled too, each by its own
    permutation: in a scrambled clip the frame before any frame is some other frame of it."""
    gen = torch.Generator().manual_seed(seed)

    def _shuffle(frames: Frames) -> Frames:
        tokens, times, before = frames.per_question()
        b, f = times.shape
        rows = torch.arange(b)[:, None]
        perm = torch.stack([torch.randperm(f, generator=gen) for _ in range(b)])
        if before is not None:
            other = torch.stack([torch.randperm(f, generator=gen) for _ in range(b)])
            before = before[rows, other]
        return Frames.dense(tokens[rows, perm], times, before)

    return _shuffle


def _test_table(qa: pd.DataFrame, keyframes: pd.DataFrame) -> pd.DataFrame:
    return qa[qa.split == "test"].merge(keyframes[["qa_id", "frames"]], on="qa_id")


def accuracy_on_test(
    model_dir: Path, index_dir: Path, qa: pd.DataFrame, keyframes: pd.DataFrame, params: EvalParams
) -> dict:
    """Accuracy, overall and per qtype, of another model (a foundation) on the test split."""
    from gifqa_model.model.text import load_tokenizer

    model = GifQAModel.from_pretrained(model_dir)
    tokenizer = load_tokenizer(Path(model_dir) / "tokenizer")
    cache = FrameCache(index_dir)
    test = _test_table(qa, keyframes)
    rows = cache.rows(test.gif_id.tolist(), test.frames.tolist())
    pred = predict_answers(
        model,
        tokenizer,
        cache,
        rows,
        test.question.tolist(),
        params.batch_size,
        params.max_answer_tokens,
    )
    correct = exact_match(pred, test.answer.tolist())
    return {
        "accuracy": round(float(correct.mean()), 4) if len(test) else 0.0,
        "by_qtype": accuracy_table(correct, test.qtype),
    }


def describe_test_gifs(
    model_dir: Path, index_dir: Path, manifest: pd.DataFrame, n_frames: int, batch_size: int
) -> tuple[dict, pd.DataFrame]:
    """The model's description of each test GIF from `n_frames` evenly spread frames, scored
    against the human one (evaluate/captions.py); returns (scores, per-GIF rows)."""
    from gifqa_model.evaluate.captions import describe_scores
    from gifqa_model.model.text import CAPTION_PROMPT, MAX_CAPTION_TOKENS, load_tokenizer

    model = GifQAModel.from_pretrained(model_dir)
    tokenizer = load_tokenizer(Path(model_dir) / "tokenizer")
    cache = FrameCache(index_dir)
    test = manifest[manifest.split == "test"]
    rows = cache.spread_rows(test.gif_id.tolist(), n_frames)
    pred = predict_answers(
        model,
        tokenizer,
        cache,
        rows,
        [CAPTION_PROMPT] * len(test),
        batch_size,
        MAX_CAPTION_TOKENS,
    )
    table = test[["gif_id", "description"]].assign(generated=pred)
    return describe_scores(pred, test.description.tolist()), table


def run_evaluate(
    model_dir: Path,
    index_dir: Path,
    qa: pd.DataFrame,
    keyframes: pd.DataFrame,
    params: EvalParams,
    out_dir: Path,
) -> tuple[dict, pd.DataFrame]:
    """Score the test split; returns (metrics/evaluate.json's metrics, per-question rows)."""
    from gifqa_model.model.text import load_tokenizer

    model = GifQAModel.from_pretrained(model_dir)
    tokenizer = load_tokenizer(Path(model_dir) / "tokenizer")
    cache = FrameCache(index_dir)
    test = _test_table(qa, keyframes)
    rows = cache.rows(test.gif_id.tolist(), test.frames.tolist())
    questions = test.question.tolist()

    def run(transform: FrameTransform | None = None, progress: bool = False) -> np.ndarray:
        pred = predict_answers(
            model,
            tokenizer,
            cache,
            rows,
            questions,
            params.batch_size,
            params.max_answer_tokens,
            transform,
            progress,
        )
        return np.array(pred, dtype=object)

    pred = run(progress=True)
    correct = exact_match(list(pred), test.answer.tolist())
    prior = prior_answers(qa[qa.split == "train"])
    prior_correct = exact_match([prior.get(t, "") for t in test.qtype], test.answer.tolist())
    blank_correct = exact_match(list(run(blank_frames)), test.answer.tolist())
    shuf_correct = exact_match(list(run(shuffle_frames(params.seed))), test.answer.tolist())

    metrics = {
        "accuracy": round(float(correct.mean()), 4) if len(test) else 0.0,
        "by_qtype": accuracy_table(correct, test.qtype),
        "prior_accuracy": round(float(prior_correct.mean()), 4) if len(test) else 0.0,
        "prior_by_qtype": accuracy_table(prior_correct, test.qtype),
        "blank_frames_accuracy": round(float(blank_correct.mean()), 4) if len(test) else 0.0,
        "blank_frames_by_qtype": accuracy_table(blank_correct, test.qtype),
        "shuffled_frames_accuracy": round(float(shuf_correct.mean()), 4) if len(test) else 0.0,
        "shuffled_frames_by_qtype": accuracy_table(shuf_correct, test.qtype),
        "n_test": int(len(test)),
        "n_test_by_qtype": {k: int(v) for k, v in test.qtype.value_counts().items()},
    }
    predictions = test[["qa_id", "gif_id", "question", "answer", "qtype"]].assign(
        prediction=pred, correct=correct
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out_dir / PREDICTIONS_FILE, index=False)
    return metrics, predictions


Answerer = Callable[[str, list[str]], list[dict]]


def score_questions(
    answer_many: Answerer, questions: pd.DataFrame, progress: bool = False
) -> pd.DataFrame:
    """Each question answered by `answer_many(gif_path, questions)`, one call per GIF →
    qa_id, prediction, keyframes, correct (exact match with the gold answer)."""
    out = []
    groups = questions.groupby("path", sort=True)
    for path, rows in tqdm(groups, desc="benchmark", unit="gif", disable=not progress):
        answers = answer_many(str(path), rows.question.tolist())
        out.append(
            rows.assign(
                prediction=[a["answer"] for a in answers],
                confidence=[float(a.get("confidence", 0.0)) for a in answers],
                keyframes=[a["keyframes"] for a in answers],
            )
        )
    table = (
        pd.concat(out, ignore_index=True)
        if out
        else questions.assign(prediction="", confidence=0.0, keyframes=None)
    )
    table = table.sort_values("qa_id" if "qa_id" in table else "question", kind="stable")
    correct = exact_match(table.prediction.tolist(), table.answer.tolist())
    return table.assign(correct=correct).reset_index(drop=True)


def score_summary(scored: pd.DataFrame) -> dict:
    """Accuracy overall and per qtype of a scored table."""
    return {
        "accuracy": round(float(np.mean(scored.correct)), 4) if len(scored) else 0.0,
        "by_qtype": accuracy_table(scored.correct.to_numpy(), scored.qtype),
        "n": int(len(scored)),
    }


def split_summaries(scored: pd.DataFrame) -> dict[str, dict]:
    """score_summary per benchmark split, the in-distribution split first."""
    from gifqa_model.core.schema import IID_SPLIT

    if "split" not in scored:
        return {IID_SPLIT: score_summary(scored)}
    names = [IID_SPLIT] + sorted(set(scored.split) - {IID_SPLIT})
    return {n: score_summary(scored[scored.split == n]) for n in names if (scored.split == n).any()}


def reversed_clips(answer_many: Answerer, test: pd.DataFrame, paths: dict[str, str]) -> dict:
    """Action questions on the test GIFs, forward and played backwards with the motion words
    of question and answer swapped (left ↔ right, up ↔ down, growing ↔ shrinking, appearing ↔
    disappearing). A model that reads the frames' order answers both; one that guesses the
    motion from the scene does not. Questions the swap cannot restate are left out."""
    from gifqa_model.data.augment import reverse_qa
    from gifqa_model.data.gifs import GifError, reverse_gif

    action = test[test.qtype == "action"]
    rev = [
        reverse_qa(q, a, t)
        for q, a, t in zip(action.question, action.answer, action.qtype, strict=True)
    ]
    keep = np.array([r is not None for r in rev], dtype=bool)
    action = action[keep].assign(
        rev_question=[r[0] for r in rev if r is not None],
        rev_answer=[r[1] for r in rev if r is not None],
    )
    fwd_ok, rev_ok = [], []
    for gif_id, rows in tqdm(action.groupby("gif_id", sort=True), desc="reversed", unit="gif"):
        try:
            backwards = reverse_gif(paths[gif_id])
        except GifError:
            continue
        fwd = answer_many(paths[gif_id], rows.question.tolist())
        bwd = answer_many(backwards, rows.rev_question.tolist())
        fwd_ok += list(exact_match([a["answer"] for a in fwd], rows.answer.tolist()))
        rev_ok += list(exact_match([a["answer"] for a in bwd], rows.rev_answer.tolist()))
    n = len(fwd_ok)
    return {
        "n": n,
        "forward_accuracy": round(float(np.mean(fwd_ok)), 4) if n else 0.0,
        "reversed_accuracy": round(float(np.mean(rev_ok)), 4) if n else 0.0,
    }
