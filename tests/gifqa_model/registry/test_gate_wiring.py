"""The gate as the flow runs it: `register_and_gate` on a real registry, each version's files
logged and downloaded back, both models scored on the same benchmark questions by the real
scoring code, the real report. Only the predictor is a stand-in: it answers from an answer
file inside the model folder, so each version's skill is known and travels with its weights.

One scenario in named steps (each needs the registry the step before left): a first version,
one challenger that must win, one that must lose to the champion though it beats an older
version, one that wins on answers but does not look at the GIF, the same answers that do look,
and weights already registered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from gifqa_model.core.config import RegistryParams
from gifqa_model.core.schema import IID_SPLIT
from gifqa_model.evaluate.metrics import score_questions
from gifqa_model.registry.promotion import Candidate, register_and_gate
from gifqa_model.registry.versions import CHAMPION, GATE_TAG, alias_version, history
from tests.helpers import logged_echo_model, tiny_gif

N_QUESTIONS = 400
ANSWER_FILE = "answers.json"
PARAMS = RegistryParams()


class FilePredictor:
    """GifQAPredictor's interface, answering from `model_dir/answers.json` (question → answer);
    also records which model folders were asked, to show who was scored."""

    asked: list[str] = []

    def __init__(self, model_dir: Path, clip_dir: Path) -> None:
        model = json.loads((Path(model_dir) / ANSWER_FILE).read_text())
        self.answers = model["answers"]
        FilePredictor.asked.append(model["name"])

    def answer_many(self, gif_path: str, questions: list[str]) -> list[dict]:
        return [
            {"answer": self.answers[q], "confidence": 0.9, "keyframes": [0, 1]} for q in questions
        ]


class SlowPredictor(FilePredictor):
    def answer_many(self, gif_path: str, questions: list[str]) -> list[dict]:
        time.sleep(0.05)  # scoring takes a while: two gates overlap unless one waits
        return super().answer_many(gif_path, questions)


def _benchmark(root: Path) -> pd.DataFrame:
    gifs = []
    for g in range(20):
        path = root / "bench" / f"g{g}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_gif(4 + g))  # one length per GIF: twenty distinct files
        gifs.append(path)
    return pd.DataFrame(
        {
            "qa_id": [f"q{i:03d}" for i in range(N_QUESTIONS)],
            "gif_id": [f"g{i % 20}" for i in range(N_QUESTIONS)],
            "path": [str(gifs[i % 20]) for i in range(N_QUESTIONS)],
            "question": [f"question {i} ?" for i in range(N_QUESTIONS)],
            "answer": "red",
            "qtype": ["color", "action"] * (N_QUESTIONS // 2),
            "split": IID_SPLIT,
        }
    )


def _model(root: Path, name: str, right: int, salt: str = "") -> tuple[Path, Path]:
    """A model folder right on the first `right` questions (wrong on the rest)."""
    model_dir, clip_dir = root / name / "model", root / name / "clip"
    model_dir.mkdir(parents=True)
    clip_dir.mkdir(parents=True)
    answers = {f"question {i} ?": "red" if i < right else "blue" for i in range(N_QUESTIONS)}
    text = json.dumps({"name": name, "answers": answers, "s": salt})
    (model_dir / ANSWER_FILE).write_text(text)
    # the "weights" the registry digests: this model's answers
    (model_dir / "model.safetensors").write_text(text)
    (clip_dir / "clip.safetensors").write_bytes(b"clip")
    return model_dir, clip_dir


def _gate(client, root: Path, bench, name: str, right: int, blank=0.2, prior=0.2, salt=""):
    model_dir, clip_dir = (
        _model(root, name, right, salt)
        if not (root / name).exists()
        else (root / name / "model", root / name / "clip")
    )
    run_id, uri = logged_echo_model({"model_dir": str(model_dir), "clip_dir": str(clip_dir)})
    # its own benchmark answers, as the flow hands on the evaluate stage's
    scored = score_questions(FilePredictor(model_dir, clip_dir).answer_many, bench)
    FilePredictor.asked = []
    candidate = Candidate(
        model_dir,
        clip_dir,
        run_id,
        blank,
        prior,
        {"flow_run": f"run-{name}"},
        f"card {name}",
        scored,
    )
    report = root / "reports" / f"{name}-{len(list(root.glob('reports/*')))}"
    report.mkdir(parents=True)
    summary = register_and_gate(client, PARAMS, lambda: uri, candidate, bench, report)
    return summary, list(FilePredictor.asked), report


def test_the_gate_as_the_flow_runs_it(client: MlflowClient, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", FilePredictor)
    bench = _benchmark(tmp_path)
    name = PARAMS.model_name
    cwd = tmp_path / "cwd"  # the gate leaves nothing where it runs (downloads go to a temp dir)
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    # step 1: the first version, no champion: the look-at-the-GIF check alone promotes it, on
    # the evaluate stage's answers (nothing scored again)
    s1, asked, report = _gate(client, tmp_path, bench, "v1", right=240)
    assert s1["version"] == 1 and s1["promoted"] and s1["champion_version"] == 1
    assert asked == []
    assert json.loads((report / "report.json").read_text())["decision"]["promote"]

    # step 2: clearly better (360 of 400 against 240): must win, scored against v1
    s2, asked, _ = _gate(client, tmp_path, bench, "v2", right=360)
    assert s2["version"] == 2 and s2["promoted"], s2["reason"]
    assert sorted(asked) == ["v1", "v2"]  # the champion was downloaded and scored too
    tags = client.get_model_version(name, "2").tags
    assert tags[GATE_TAG] == "promoted" and tags["gate.compared_with"] == "v1"
    # registered from the run that logged it, with its card; the flow run named on the gate
    v2 = client.get_model_version(name, "2")
    assert v2.run_id == mlflow.last_active_run().info.run_id and v2.description == "card v2"
    assert tags["gate.flow_run"] == "run-v2"
    assert tags["gate.delta"] == f"{120 / 400:+.4f}"
    assert alias_version(client, name, CHAMPION) == 2

    # step 3: better than v1, worse than the champion v2: must lose, and to v2
    s3, asked, report = _gate(client, tmp_path, bench, "v3", right=300)
    assert s3["version"] == 3 and not s3["promoted"], s3["reason"]
    # the summary carries the decision whole; the report compares with v2 and its own answers
    assert s3["decision"]["promote"] is False and s3["decision"]["delta"] == -60 / 400
    shown = json.loads((report / "report.json").read_text())
    assert shown["champion_before"] == 2 and shown["champion_by_qtype"], shown.keys()
    assert sorted(asked) == ["v2", "v3"]
    tags = client.get_model_version(name, "3").tags
    assert tags[GATE_TAG] == "rejected" and tags["gate.compared_with"] == "v2"
    assert tags["gate.delta"] == f"{-60 / 400:+.4f}"
    assert alias_version(client, name, CHAMPION) == 2

    # step 4: better answers but blank frames do as well as the GIF: refused on the look check
    # (its blank accuracy, not the prior, is what must stay under prior + margin)
    s4, _, _ = _gate(client, tmp_path, bench, "v4", right=400, blank=0.5, prior=0.2)
    assert not s4["promoted"] and "does not look at the GIF" in s4["reason"]
    checks = json.loads(client.get_model_version(name, "4").tags["gate.checks"])
    assert checks == {**checks, "significant": True, "min_effect": True, "looks_at_gif": False}
    assert alias_version(client, name, CHAMPION) == 2

    # step 5: the same answers with blank frames at the prior: promoted over v2
    s5, _, _ = _gate(client, tmp_path, bench, "v5", right=400, blank=0.2, prior=0.25, salt="b")
    assert s5["promoted"] and alias_version(client, name, CHAMPION) == 5, s5["reason"]
    moves = history(client, name)
    assert [m["version"] for m in moves] == [1, 2, 5] and {m["actor"] for m in moves} == {"gate"}
    assert [m["compared_with"] for m in moves] == [None, 1, 2]

    # step 6: weights already registered: nothing new, the champion stays
    n_versions = len(client.search_model_versions(f"name='{name}'"))
    s6, asked, _ = _gate(client, tmp_path, bench, "v3", right=300)
    assert s6["unchanged"] and s6["version"] == 3 and not s6["promoted"] and asked == []
    assert s6["reason"] == "unchanged: the weights are v3's; nothing registered"
    assert s6["champion_version"] == 5
    assert len(client.search_model_versions(f"name='{name}'")) == n_versions
    assert alias_version(client, name, CHAMPION) == 5
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("blank, prior, promoted", [(0.30, 0.20, True), (0.31, 0.20, False)])
def test_the_blank_and_prior_figures_reach_the_gate_as_given(
    client: MlflowClient, tmp_path: Path, monkeypatch, blank: float, prior: float, promoted: bool
) -> None:
    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", FilePredictor)
    s, _, _ = _gate(client, tmp_path, _benchmark(tmp_path), "v1", 300, blank=blank, prior=prior)
    tags = client.get_model_version(PARAMS.model_name, "1").tags
    assert s["promoted"] is promoted and json.loads(tags["gate.checks"])["looks_at_gif"] is promoted


RACE = """
import json, sys, time, importlib.util
from pathlib import Path
from gifqa_model.core.gcpause import collector_paused
with collector_paused():  # as a stage imports its libraries (core/gcpause.py)
    import mlflow
    from mlflow import MlflowClient
    spec = importlib.util.spec_from_file_location("wiring", sys.argv[1])
    wiring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wiring)
    import gifqa_model.inference.predict as predict

predict.GifQAPredictor = wiring.SlowPredictor
uri, root, name, right = sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("registry-test")
bench = wiring._benchmark(root / name)
(root / f"{name}.ready").touch()
while not (root / "go").exists():
    time.sleep(0.01)
summary, _, _ = wiring._gate(MlflowClient(uri), root / name, bench, name, right)
print(json.dumps(summary["version"]))
"""


def test_new_clip_weights_alone_make_a_new_version(client: MlflowClient, tmp_path, monkeypatch):
    """The digest covers both folders: the same answering weights with another CLIP are a
    new model, gated; scored from scratch when the evaluate stage left no answers."""
    import shutil

    from gifqa_model.registry.promotion import score_pair

    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", FilePredictor)
    bench = _benchmark(tmp_path)
    s1, _, _ = _gate(client, tmp_path, bench, "a", right=240)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "clip" / "clip.safetensors").write_bytes(b"another clip")
    s2, _, _ = _gate(client, tmp_path, bench, "b", right=240)
    assert not s2["unchanged"] and s2["version"] == s1["version"] + 1
    FilePredictor.asked = []
    chall, champ = score_pair(bench, (tmp_path / "a" / "model", tmp_path / "a" / "clip"), None)
    assert champ is None and FilePredictor.asked == ["a"] and chall.correct.sum() == 240


def test_a_drop_on_an_ood_split_refuses_a_challenger_that_wins_in_distribution(
    client: MlflowClient, tmp_path: Path, monkeypatch
) -> None:
    """The benchmark's split column reaches the gate: the last 100 questions are an OOD split
    the champion answers and the challenger does not."""
    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", FilePredictor)
    bench = _benchmark(tmp_path)
    bench.loc[300:, "split"] = "crowded"
    model_dir, _ = _model(tmp_path, "v1", 200)  # right on 200 and on the OOD split too
    answers = json.loads((model_dir / ANSWER_FILE).read_text())
    answers["answers"].update({f"question {i} ?": "red" for i in range(300, N_QUESTIONS)})
    (model_dir / ANSWER_FILE).write_text(json.dumps(answers))
    _gate(client, tmp_path, bench, "v1", right=200)
    s2, _, _ = _gate(client, tmp_path, bench, "v2", right=290)  # +90 in distribution, 0 OOD
    assert not s2["promoted"] and s2["reason"].startswith("split crowded drops -1.0000"), s2
    assert json.loads(
        client.get_model_version(PARAMS.model_name, "2").tags["gate.split_deltas"]
    ) == {
        "benchmark": 0.3,
        "crowded": -1.0,
    }


def test_a_version_registered_but_never_gated_is_gated_not_registered_again(
    client: MlflowClient, tmp_path: Path, monkeypatch
) -> None:
    """A run that failed between registering and the gate leaves a version with no decision:
    the next run with the same weights gates that version instead of adding another."""
    from gifqa_model.registry.versions import DIGEST_TAG, create_version, weights_digest

    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", FilePredictor)
    bench = _benchmark(tmp_path)
    model_dir, clip_dir = _model(tmp_path, "a", 240)
    run_id, uri = logged_echo_model({"model_dir": str(model_dir), "clip_dir": str(clip_dir)})
    digest = weights_digest(model_dir, clip_dir)
    create_version(client, PARAMS.model_name, uri, run_id, {DIGEST_TAG: digest}, "card")
    summary, _, _ = _gate(client, tmp_path, bench, "a", right=240)
    assert summary["version"] == 1 and not summary["unchanged"] and summary["promoted"]
    assert len(client.search_model_versions(f"name='{PARAMS.model_name}'")) == 1
    assert client.get_model_version(PARAMS.model_name, "1").tags[GATE_TAG] == "promoted"


@pytest.mark.slow  # 20 s: not in `make mutate` (lock mutants die in test_registry's race)
def test_two_gates_at_once_decide_one_after_the_other(
    client: MlflowClient, tmp_path: Path, monkeypatch
) -> None:
    """Two challengers gated at once by two processes (another one and this one): the registry
    lock makes the second score against the champion the first left, never both against the
    old one."""
    import subprocess
    import sys

    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", FilePredictor)
    _gate(client, tmp_path, _benchmark(tmp_path), "v1", right=240)
    script = tmp_path / "race.py"
    script.write_text(RACE)
    repo = Path(__file__).resolve().parents[3]
    uri = mlflow.get_tracking_uri()
    proc = subprocess.Popen(
        [sys.executable, str(script), __file__, uri, str(tmp_path), "good", "300"],
        cwd=repo,
        env={**__import__("os").environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setattr("gifqa_model.inference.predict.GifQAPredictor", SlowPredictor)
    bench = _benchmark(tmp_path / "best")
    deadline = time.monotonic() + 300
    while not (tmp_path / "good.ready").exists():
        assert proc.poll() is None, f"the other gate process died early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the other gate process never got ready"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    try:
        summary, _, _ = _gate(client, tmp_path / "best", bench, "best", 360)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    versions = {"best": summary["version"], "good": int(out.split()[-1])}
    compared = {
        name: client.get_model_version(PARAMS.model_name, str(v)).tags["gate.compared_with"]
        for name, v in versions.items()
    }
    first = next(n for n, c in compared.items() if c == "v1")
    second = next(n for n in compared if n != first)
    assert compared[second] == f"v{versions[first]}", compared  # not v1 as well
    assert alias_version(client, PARAMS.model_name, CHAMPION) == versions["best"]
