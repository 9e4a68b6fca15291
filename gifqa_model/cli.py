"""The library's `gifqa` commands: one per stage (what dvc.yaml calls) plus data, under their own
help heading; qa, answer, search and serve to use; `dev deps` for developers. No Prefect here:
the orchestration side (flows/cli.py) adds its commands (run, models, stack, ...) to this same
app, and the installed `gifqa` is that joined app. `gifqa --help` lists them by PANELS."""

from __future__ import annotations

from gifqa_model.core.env import apply_offline_env

apply_offline_env()

import base64  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NoReturn  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from gifqa_model.core.config import CHAMPION_URI  # noqa: E402

# `gifqa --help` headings, in this order (flows/cli.py files its commands under them too)
USE = "Use"
STAGES = "Pipeline stages (run by dvc repro)"
MODELS = "Models"
OPERATE = "Operate"
DEV = "Develop"
PANELS = (USE, STAGES, MODELS, OPERATE, DEV)


class _Grouped(TyperGroup):
    """Lists the commands heading by heading (PANELS' order, whoever registered them first),
    a heading's groups (models, stack) before its single commands."""

    def list_commands(self, ctx) -> list[str]:
        def rank(name: str) -> tuple[int, bool]:
            command = self.commands[name]
            panel = getattr(command, "rich_help_panel", None)
            return (
                PANELS.index(panel) if panel in PANELS else len(PANELS),
                not isinstance(command, TyperGroup),
            )

        return sorted(super().list_commands(ctx), key=rank)


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    cls=_Grouped,
    help="gifqa: GIF question answering, from GIFs to a registered model.",
)
console = Console()


def fail(message: str, code: int = 1) -> NoReturn:
    """Say why in red and exit with `code`, without a traceback."""
    console.print(f"[red]{message}[/]")
    raise typer.Exit(code)


PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")


def _params(path: Path):
    from gifqa_model.core.config import load_params

    return load_params(path)


def _show(stage: str, metrics: dict) -> None:
    console.print(f"[bold green]{stage}[/] " + json.dumps(metrics, default=str)[:2000])


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    # our own INFO lines; libraries only from WARNING (GX and friends are chatty at INFO)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("gifqa_model", "flows", "tasks"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


@app.command(rich_help_panel=STAGES)
def data(params: Path = PARAMS, force: bool = typer.Option(False, help="regenerate")) -> None:
    """Generate the embedded ShapesWorld corpus into data/shapesworld (tracked by data.dvc)."""
    from gifqa_model.stages import stage_data

    _show("data", stage_data(_params(params), force=force))


@app.command(rich_help_panel=STAGES)
def ingest(
    params: Path = PARAMS,
    from_folder: Path | None = typer.Option(None, help="a folder with descriptions.tsv"),
    out: Path | None = typer.Option(None, help="output folder (with --from-folder)"),
) -> None:
    """Stage: GIFs → manifest.parquet + quarantine.parquet. Alone: --from-folder DIR --out DIR."""
    if from_folder is not None:
        from gifqa_model.data.ingest import ingest_folder

        if out is None:
            raise typer.BadParameter("--out is required with --from-folder")
        _show("ingest", ingest_folder(from_folder, out))
        return
    from gifqa_model.stages import stage_ingest

    _show("ingest", stage_ingest(_params(params)))


@app.command("synth-qa", rich_help_panel=STAGES)
def synth_qa(params: Path = PARAMS) -> None:
    """Stage: descriptions → typed question/answer pairs (outputs/synth_qa/qa.parquet)."""
    from gifqa_model.stages import stage_synth_qa

    _show("synth_qa", stage_synth_qa(_params(params)))


@app.command(rich_help_panel=USE)
def qa(
    input: Path = typer.Option(
        ...,
        "--input",
        help="TSV with columns gif (or gif_name) and description, "
        "e.g. data/shapesworld/descriptions.tsv",
    ),
    output: Path = typer.Option(..., "--output", help="TSV: gif_name, question, answer, qtype"),
    params: Path = PARAMS,
) -> None:
    """Generate question/answer pairs from a descriptions TSV.

    Input columns: gif (or gif_name) and description, e.g. data/shapesworld/descriptions.tsv.
    The synth-qa stage's generator and filters (--params' qa section), with no DVC stage."""
    from gifqa_model.core.config import QAParams
    from gifqa_model.qa.synth import qa_tsv

    qa_params = _params(params).qa if params.is_file() else QAParams()
    _show("qa", qa_tsv(input, output, qa_params))


@app.command(rich_help_panel=STAGES)
def validate(params: Path = PARAMS) -> None:
    """Stage: Great Expectations suites; clean tables + quarantine; fails over the threshold."""
    from gifqa_model.data.validation import ValidationFailed
    from gifqa_model.stages import stage_validate

    try:
        _show("validate", stage_validate(_params(params)))
    except ValidationFailed as exc:
        fail(f"validation failed: {exc}")


@app.command(rich_help_panel=STAGES)
def index(params: Path = PARAMS) -> None:
    """Stage: the pretrained (foundation's) CLIP, frozen: frame tokens, FAISS index, keyframes."""
    from gifqa_model.stages import stage_index

    try:
        _show("index", stage_index(_params(params)))
    except TimeoutError as exc:
        fail(f"index stopped: {exc}")


@app.command(rich_help_panel=STAGES)
def train(params: Path = PARAMS) -> None:
    """Stage: fine-tune GifQAModel from the foundation on cached features (answers, descriptions,
    MVM; train.nproc > 1: DDP under torchrun)."""
    from gifqa_model.stages import stage_train
    from gifqa_model.train.launch import DistributedTrainFailed

    try:
        _show("train", stage_train(_params(params)))
    except DistributedTrainFailed as exc:
        fail(f"train stopped: {exc}")
    except RuntimeError as exc:
        # imported here, not above: a launcher of torchrun ranks never imports torch itself
        # (the loop that raises a timeout is imported by then)
        from gifqa_model.train.loop import TrainingTimeout

        if not isinstance(exc, TrainingTimeout):
            raise
        fail(f"train stopped: {exc}")


@app.command(rich_help_panel=STAGES)
def benchmark(params: Path = PARAMS) -> None:
    """Stage: the frozen benchmark (ShapesWorld from another seed, never trained on)."""
    from gifqa_model.stages import stage_benchmark

    _show("benchmark", stage_benchmark(_params(params)))


@app.command(rich_help_panel=STAGES)
def evaluate(params: Path = PARAMS) -> None:
    """Stage: exact match overall and per qtype, baselines, blanked/shuffled frames, the
    foundation alone, test descriptions, the benchmark and its OOD splits."""
    from gifqa_model.stages import stage_evaluate

    _show("evaluate", stage_evaluate(_params(params)))


@app.command(rich_help_panel=USE)
def answer(
    gif: Path,
    question: str,
    model_uri: str = typer.Option(CHAMPION_URI, help="MLflow model URI"),
) -> None:
    """Answer a question about a GIF with a registered model."""
    import pandas as pd

    from gifqa_model.inference.pyfunc import load_pyfunc

    if not gif.is_file():
        fail(f"no such file: {gif}", 2)
    model = load_pyfunc(model_uri)
    # the model takes bytes, never a path: the CLI reads the file the user named
    data = base64.b64encode(gif.read_bytes()).decode()
    out = model.predict(pd.DataFrame({"gif": [data], "question": [question]}))
    console.print(f"[bold]answer:[/] {out.answer[0]}  (confidence {out.confidence[0]:.2f})")
    console.print(f"[bold]keyframes:[/] {list(out.keyframes[0])}")


@app.command(rich_help_panel=USE)
def describe(
    gif: Path,
    model_uri: str = typer.Option(CHAMPION_URI, help="MLflow model URI"),
) -> None:
    """Describe a whole GIF in words with a registered model."""
    from gifqa_model.inference.pyfunc import load_pyfunc

    if not gif.is_file():
        fail(f"no such file: {gif}", 2)
    predictor = load_pyfunc(model_uri).unwrap_python_model().predictor
    out = predictor.describe(gif.read_bytes())
    console.print(f"[bold]description:[/] {out['description']}")
    console.print(f"[bold]frames read:[/] {out['keyframes']}")


@app.command(rich_help_panel=USE)
def search(
    query: str,
    k: int = typer.Option(10, help="how many GIFs"),
    index_dir: Path = typer.Option(Path("outputs/index"), help="the index stage's outputs"),
    split: str | None = typer.Option(None, help="only GIFs of this split (train/val/test)"),
) -> None:
    """Find the corpus GIFs a text describes: CLIP's text tower against GIF embeddings."""
    from gifqa_model.index.search import GifSearch

    if not (index_dir / "search").is_dir():
        fail(f"no search index in {index_dir}: run the index stage first", 2)
    for rank, hit in enumerate(GifSearch.open(index_dir).search([query], k, split)[0], 1):
        console.print(f"{rank:>3}  {hit['score']:.3f}  {hit['gif_id']}  {hit['path']}")


@app.command(rich_help_panel=USE)
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="port to bind"),
    model_uri: str | None = typer.Option(
        None, help=f"MLflow model URI (default: $GIFQA_MODEL_URI, else {CHAMPION_URI})"
    ),
    model_dir: Path | None = typer.Option(None, help="a local model dir (with --clip-dir)"),
    clip_dir: Path | None = typer.Option(None, help="its CLIP dir (with --model-dir)"),
    poll_seconds: float | None = typer.Option(
        None, help="how often to check the alias for a new champion (0: never; default 30)"
    ),
    search_dir: Path | None = typer.Option(
        None, help="an index stage's outputs, for GET /v1/search (e.g. outputs/index)"
    ),
) -> None:
    """Serve API v1 (POST /v1/answer, /v1/answer:batch, /v1/describe, GET /v1/model,
    /healthz, /readyz, /metrics) over HTTP, following the alias as it moves. Settings:
    GIFQA_* env vars."""
    import uvicorn

    from gifqa_model.serve.app import create_app
    from gifqa_model.serve.settings import ServeSettings

    # flags override GIFQA_* env vars, which override the defaults
    overrides = {
        "model_uri": model_uri,
        "model_dir": model_dir,
        "clip_dir": clip_dir,
        "poll_seconds": poll_seconds,
        "search_dir": search_dir,
    }
    settings = ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
    from gifqa_model.core.gcpause import collector_paused

    # what the model's load imports (torch, open_clip, transformers; MLflow for a registered
    # model), here with the cyclic collector paused: ≈1.2× faster (core/gcpause.py)
    with collector_paused():
        import gifqa_model.inference.predict  # noqa: F401

        if settings.model_dir is None:
            import gifqa_model.inference.pyfunc  # noqa: F401
    uvicorn.run(create_app(settings), host=host, port=port)


foundation = typer.Typer(
    help="The pretrained foundation: what the simulator knows, built apart from any retrain.",
    no_args_is_help=True,
)
app.add_typer(foundation, name="foundation", rich_help_panel=MODELS)


@foundation.command("build")
def foundation_build(
    params: Path = PARAMS,
    pin: bool = typer.Option(False, "--pin", help="write its digest into params.yaml"),
) -> None:
    """Train the foundation on its own ShapesWorld corpus (ground truth included) and export
    it to foundation.dir. A retrain never runs this: a new foundation is a deliberate change."""
    from gifqa_model.stages import stage_foundation

    metrics = stage_foundation(_params(params))
    _show("foundation", metrics)
    if pin:
        from gifqa_model.core.config import pin_foundation

        pin_foundation(params, metrics["digest"])
        console.print(f"params.yaml pins foundation.digest {metrics['digest']}")


@foundation.command("register")
def foundation_register(params: Path = PARAMS) -> None:
    """Register foundation.dir in MLflow as its own model (gifqa-foundation), with its card."""
    from gifqa_model.core.artifacts import FOUNDATION_METRICS
    from gifqa_model.registry.foundation import FOUNDATION_MODEL, register_foundation

    p = _params(params)
    metrics = json.loads(FOUNDATION_METRICS.read_text()) if FOUNDATION_METRICS.is_file() else {}
    version = register_foundation(p, Path(p.foundation.dir), metrics)
    console.print(f"{FOUNDATION_MODEL} version {version}")


dev = typer.Typer(help="Developer checks of the project's own files.", no_args_is_help=True)
app.add_typer(dev, name="dev", rich_help_panel=DEV)


@dev.command("deps")
def dev_deps(
    write: bool = typer.Option(False, "--write", help="rewrite dvc.yaml's code deps"),
) -> None:
    """Check dvc.yaml's code deps against each stage's import closure.

    Prints the stages whose deps differ and exits 1; --write rewrites them and prints the
    stages that changed."""
    from gifqa_model.core import deps

    if write:
        changed = deps.write_code_deps()
        console.print(
            f"dvc.yaml code deps rewritten: {', '.join(changed)}"
            if changed
            else "dvc.yaml code deps already up to date"
        )
        return
    stale = deps.stale_code_deps()
    if not stale:
        console.print("dvc.yaml code deps are up to date")
        return
    for stage, (listed, derived) in stale.items():
        missing = [d for d in derived if d not in listed]
        extra = [d for d in listed if d not in derived]
        console.print(
            f"[bold red]{stage}[/]: "
            + ", ".join(
                [f"+{d}" for d in missing] + [f"-{d}" for d in extra]
                or ["same deps, another order"]
            ),
            highlight=False,
        )
    console.print("run `gifqa dev deps --write` to rewrite them")
    raise typer.Exit(1)


if __name__ == "__main__":  # how torchrun starts each rank
    import sys

    from gifqa_model.core.deps import import_stage
    from gifqa_model.core.quick_exit import run_then_exit

    if sys.argv[1:2] == ["train"]:
        import_stage("train")  # with the cyclic collector paused: 1 CPU-s less a rank
    run_then_exit(app)
