"""What every question generator shares: the candidate it yields and the interface it has.

Backends (qa/rules.py, qa/t5.py) turn descriptions into candidates; qa/synth.py filters them,
the same way for every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    """One generated question with its answer and type, before filtering."""

    question: str
    answer: str
    qtype: str


class QAGenerator(Protocol):
    """Turns descriptions into typed candidates (one list per description, unfiltered)."""

    name: str

    def generate(
        self, descriptions: Sequence[str], progress: bool = False
    ) -> list[list[Candidate]]: ...
