"""The ``t5`` backend: a seq2seq question generator writes the question for each typed answer.

This is the gif-qa project's approach: answer candidates come from spaCy (here: the typed
answers of the rules backend, so types and grounding stay the same), and a T5 model fine-tuned
for answer-aware question generation on SQuAD is asked, once per candidate, with the input
``answer: {a}  context: {description} </s>``. The model is loaded from a local directory only
(no hub access); any AutoModelForSeq2SeqLM checkpoint with its tokenizer works.

The rules backend is the default because the model's questions cannot be checked the way the
rules' can: a T5 question may give its answer away or drift from the description, which the
shared filters in :mod:`gifqa_model.qa.synth` then count and drop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from gifqa_model.qa.base import Candidate
from gifqa_model.qa.rules import RulesGenerator

if TYPE_CHECKING:
    from gifqa_model.core.config import QAParams

# The input format the SQuAD question-generation T5 models were fine-tuned with (two spaces
# before "context", and an explicit end marker), kept verbatim so such a checkpoint works as is.
PROMPT = "answer: {answer}  context: {context} </s>"


def prompt(answer: str, context: str) -> str:
    return PROMPT.format(answer=answer, context=context)


class T5Generator:
    """Typed answers from the rules, questions from a local text-to-text model."""

    name = "t5"

    def __init__(self, params: QAParams):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        path = Path(params.t5_model_dir or "")
        if not path.is_dir():
            raise FileNotFoundError(f"qa.t5_model_dir {path} is not a directory")
        self.params = params
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True).eval()
        self.rules = RulesGenerator(params)

    def _questions(self, prompts: list[str], progress: bool) -> list[str]:
        out: list[str] = []
        size = self.params.t5_batch_size
        batches = range(0, len(prompts), size)
        for start in tqdm(batches, desc="t5", unit="batch", disable=not progress):
            enc = self.tokenizer(
                prompts[start : start + size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.params.t5_max_input_tokens,
            )
            enc.pop(
                "token_type_ids", None
            )  # word-level test tokenizers add it; T5 does not take it
            with self.torch.inference_mode():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=self.params.t5_max_new_tokens,
                    num_beams=1,
                    do_sample=False,
                )
            out.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out

    def generate(
        self, descriptions: Sequence[str], progress: bool = False
    ) -> list[list[Candidate]]:
        typed = self.rules.generate(descriptions, progress)
        prompts = [
            prompt(c.answer, d) for d, cands in zip(descriptions, typed, strict=True) for c in cands
        ]
        questions = iter(self._questions(prompts, progress))
        return [[Candidate(next(questions), c.answer, c.qtype) for c in cands] for cands in typed]
