"""Question/answer text ↔ token ids for the LM.

The tiny profile trains a word-level tokenizer on the training questions and answers (the
ShapesWorld vocabulary is a few hundred words, so a BPE would only add steps per answer). The
full profile uses the pretrained LM's own tokenizer. Both are `PreTrainedTokenizerFast`, so the
rest of the code does not care which it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gifqa_model.qa.normalize import match_form

SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
    "sep_token": "[SEP]",
}


CAPTION_PROMPT = "describe the gif ."  # the caption task's question (train.captions, describe)
MAX_CAPTION_TOKENS = 48  # a description's greedy decoding budget (ShapesWorld's run to ~35)


def train_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token=SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIALS.values()), min_frequency=1)
    tok.train_from_iterator((t.lower() for t in texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:  # GPT-2 class tokenizers have none
        tok.pad_token = tok.eos_token
    return tok


def _prompt_ids(tok: PreTrainedTokenizerFast, questions: Sequence[str]) -> list[list[int]]:
    """[BOS question SEP] per question, in one batched tokenizer call (per-question calls were
    a tenth of a tiny training step)."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    sep = (
        [tok.sep_token_id]
        if tok.sep_token_id is not None
        else tok(" answer:", add_special_tokens=False)["input_ids"]
    )
    if not questions:
        return []
    ids = tok([q.lower() for q in questions], add_special_tokens=False)["input_ids"]
    return [bos + q + sep for q in ids]


def encode_train_batch(
    tok: PreTrainedTokenizerFast, questions: Sequence[str], answers: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded [BOS q SEP a EOS] ids, attention mask, and labels (-100 off the answer)."""
    prompts = _prompt_ids(tok, questions)
    answer_ids = tok([" " + a.lower() for a in answers], add_special_tokens=False)["input_ids"]
    rows, labels = [], []
    for p, a in zip(prompts, answer_ids, strict=True):
        ans = a + [tok.eos_token_id]
        rows.append(p + ans)
        labels.append([-100] * len(p) + ans)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        lab[i, : len(lb)] = torch.tensor(lb)
    return ids, mask, lab


def encode_prompts(
    tok: PreTrainedTokenizerFast, questions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts for batched greedy decoding."""
    rows = _prompt_ids(tok, questions)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def decode_answers(tok: PreTrainedTokenizerFast, ids: Sequence[Sequence[int]]) -> list[str]:
    return [match_form(tok.decode(list(r), skip_special_tokens=True)) for r in ids]
