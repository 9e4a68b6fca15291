"""The installed `gifqa` command: the library's commands (gifqa_model/cli.py) plus the
orchestration's (run; models list|history|promote|rollback|webhook, ui; stack up|down|backup|
restore ..., deploy), under the library's help headings. Prefect is imported by a command when
it runs, never to list the commands, so `gifqa ingest` (what dvc.yaml calls) starts as fast as
the library's own CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from flows.fanout import from_env
from gifqa_model.cli import MODELS, OPERATE, USE, app, console, fail
from gifqa_model.core.fanout import inject

__all__ = ["app"]

inject(from_env)  # GIFQA_FANOUT_RUNNER=dask: ingest and index shards on a Dask cluster


@app.command(rich_help_panel=USE)
def run(project: Path = typer.Option(Path("."), help="project directory")) -> None:
    """Run the retrain flow (Prefect) over every stage; registers a model version."""
    from flows.retrain import retrain

    summary = retrain(project_dir=str(project.resolve()))
    if "version" not in summary:
        console.print(f"ran without registering (accuracy {summary['accuracy']:.3f})")
        return
    this = (
        f"unchanged (same weights as v{summary['version']})"
        if summary.get("unchanged")
        else f"v{summary['version']} " + ("promoted" if summary["promoted"] else "not promoted")
    )
    console.print(
        f"[bold]this run:[/] {this}; test accuracy {summary['accuracy']:.3f} "
        f"(prior {summary['baseline']:.3f})\n[bold]champion:[/] gifqa "
        f"v{summary['champion_version']}\n[bold]gate:[/] {summary['reason']}"
    )


models = typer.Typer(
    help="The registered versions of the model, their history, and moving the "
    "champion by hand (promote, rollback).",
    no_args_is_help=True,
)
app.add_typer(models, name="models", rich_help_panel=MODELS)
NAME = typer.Option("gifqa", "--name", help="registered model name")


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


@models.command("list")
def models_list(name: str = NAME) -> None:
    """Versions newest first: aliases, benchmark and test accuracy, the gate's decision."""
    from rich.table import Table

    from gifqa_model.registry.versions import list_versions

    versions = list_versions(_client(), name)
    # one column per OOD split any version was scored on, in first-seen order
    splits = list(dict.fromkeys(s for v in versions for s in v["splits"] if s != "benchmark"))
    table = Table("version", "aliases", "created", "benchmark", *splits, "test", "gate", "run")
    for v in versions:
        table.add_row(
            f"v{v['version']}",
            ", ".join(v["aliases"]),
            v["created"],
            v["benchmark_accuracy"] or "",
            *(v["splits"].get(s, "") for s in splits),
            v["test_accuracy"] or "",
            v["decision"] or "",
            (v["run_id"] or "")[:12],
        )
    console.print(table)


@models.command("history")
def models_history(name: str = NAME) -> None:
    """Every alias move, oldest first: who was champion when, and why."""
    from gifqa_model.registry.versions import history

    moves = history(_client(), name)
    if not moves:
        console.print(f"no alias moves recorded for {name}")
    for h in moves:
        before = f"v{h['previous']}" if h["previous"] else "none"
        console.print(
            f"{h['time']}  {h['alias']}: {before} → v{h['version']}  [{h['actor']}] {h['reason']}"
        )


@models.command("promote")
def models_promote(
    version: int,
    reason: str = typer.Option(..., "--reason", help="why, recorded"),
    name: str = NAME,
) -> None:
    """Make VERSION the champion by hand (recorded with its reason)."""
    from gifqa_model.registry.versions import promote as do_promote

    entry = do_promote(_client(), name, version, reason)
    console.print(f"champion: v{entry['previous']} → v{entry['version']} ({reason})")


@models.command("rollback")
def models_rollback(
    reason: str = typer.Option("rollback", "--reason", help="why, recorded"), name: str = NAME
) -> None:
    """Put the previous champion back (recorded)."""
    from gifqa_model.registry.versions import rollback as do_rollback

    try:
        entry = do_rollback(_client(), name, reason)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"champion: v{entry['previous']} → v{entry['version']} ({entry['reason']})")


@models.command("webhook")
def models_webhook(
    url: str = typer.Argument(..., help="where to POST, e.g. http://127.0.0.1:8000/v1/notices"),
) -> None:
    """Ask the tracking server to POST each alias move to URL (an MLflow registry webhook,
    signed with GIFQA_WEBHOOK_SECRET). Needs a tracking server with a database (the stack);
    gifqa's own notices (GIFQA_ALERT_WEBHOOK) need neither."""
    import hashlib
    import os

    from mlflow.exceptions import MlflowException

    from gifqa_model.core.notices import SECRET_ENV

    secret = os.environ.get(SECRET_ENV)
    if not secret:
        fail(f"set {SECRET_ENV}: the receiver checks each delivery against it")
    try:
        hook = _client().create_webhook(
            # MLflow's names: letters, digits, ".-_", under 63 characters; one per URL
            name=f"gifqa-alias-{hashlib.sha256(url.encode()).hexdigest()[:12]}",
            url=url,
            events=["model_version_alias.created"],
            description="gifqa: reload when an alias moves",
            secret=secret,
        )
    except MlflowException as exc:
        fail(f"the tracking server refused the webhook: {exc.message}")
    console.print(f"webhook {hook.webhook_id}: alias moves → {url}")


@app.command(rich_help_panel=MODELS)
def compare(
    a: str = typer.Argument(..., help="a version (v3 or 3) or a run id"),
    b: str = typer.Argument(..., help="another version or run id"),
    out: Path = typer.Option(Path("compare"), help="folder for compare.html and compare.json"),
    name: str = NAME,
) -> None:
    """Two runs or versions side by side: accuracy per qtype and split, the questions they
    answer differently with the keyframes each chose, training curves, what differs."""
    from gifqa_model.registry.compare import CompareError
    from gifqa_model.registry.compare import compare as compare_pair

    try:
        paths = compare_pair(_client(), name, a, b, out)
    except CompareError as exc:
        fail(str(exc))
    summary = json.loads(paths["json"].read_text())
    if "n_disagreements" in summary:
        console.print(
            f"{summary['a']['label']} vs {summary['b']['label']}: they disagree on "
            f"{summary['n_disagreements']} of {summary['n_common_questions']} benchmark questions"
        )
    console.print(f"{len(summary['param_diff'])} params differ; report: {paths['html']}")


@app.command(rich_help_panel=MODELS)
def dashboard(
    port: int = typer.Option(8050, help="port on 127.0.0.1"),
    stack: bool = typer.Option(
        False, "--stack", help="read the local stack as its reader identity (`gifqa stack up`)"
    ),
    name: str = NAME,
) -> None:
    """A read-only page over the registry's timeline, accuracy over versions, the runs (pick
    two to compare), the data versions and drift, and Prefect's flow runs."""
    import os

    import uvicorn

    from gifqa_model.dashboard.app import DashboardSettings, create_app

    if stack:
        from flows.stack import client_env, load_settings

        os.environ.update(client_env(load_settings(), reader=True))
    console.print(
        f"dashboard of {name} on {os.environ['MLFLOW_TRACKING_URI']}: http://127.0.0.1:{port}"
    )
    uvicorn.run(create_app(DashboardSettings(model_name=name)), host="127.0.0.1", port=port)


@app.command(rich_help_panel=MODELS)
def ui(port: int = typer.Option(5000, help="port on 127.0.0.1")) -> None:
    """Open the MLflow UI on this project's tracking store (runs, plots, registry)."""
    import os
    import subprocess

    uri = os.environ["MLFLOW_TRACKING_URI"]
    console.print(f"MLflow UI for {uri} on http://127.0.0.1:{port}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        check=False,
    )


stack = typer.Typer(
    help="The local stack of real servers on 127.0.0.1 (flows/stack.py).", no_args_is_help=True
)
app.add_typer(stack, name="stack", rich_help_panel=OPERATE)


@stack.command("up")
def stack_up(
    project: Path = typer.Option(Path("."), help="project the worker runs in"),
    worker: bool = typer.Option(True, help="start a process worker"),
) -> None:
    """Start PostgreSQL, the object store, MLflow, Prefect and a worker; point DVC at the
    object store. `eval "$(gifqa stack env)"` then sends every command to them."""
    from flows.stack import Stack, load_settings
    from tasks.publish import configure_remote

    settings = load_settings(worker=worker)
    env = Stack(settings).up(project.resolve(), progress=console.print)
    if (project / ".dvc").is_dir():
        configure_remote(project, env["GIFQA_DVC_REMOTE"], env["GIFQA_DVC_REMOTE_ENDPOINT"])
        console.print(f"DVC remote: {env['GIFQA_DVC_REMOTE']} (in .dvc/config.local)")
    console.print(
        f"MLflow {env['MLFLOW_TRACKING_URI']} · Prefect "
        f"{env['PREFECT_API_URL'].removesuffix('/api')} · S3 "
        f'{env["MLFLOW_S3_ENDPOINT_URL"]}\nnext: eval "$(gifqa stack env)" && '
        "gifqa deploy"
    )


@stack.command("down")
def stack_down() -> None:
    """Stop every server of the stack (their data stays under .stack/)."""
    from flows.stack import Stack, load_settings

    Stack(load_settings()).down(progress=console.print)


@stack.command("status")
def stack_status() -> None:
    from flows.stack import Stack, load_settings

    for name, up in Stack(load_settings()).status().items():
        console.print(f"{name}: {'up' if up else 'down'}")


@stack.command("backup")
def stack_backup(dest: Path = typer.Argument(..., help="a new folder for the backup")) -> None:
    """Copy the running stack's databases (MLflow, its users, Prefect) and every object of
    its store (artifacts, the DVC remote) into DEST, with a manifest; DEST holds secrets."""
    from flows.backup import BackupError, backup
    from flows.stack import Stack, load_settings

    try:
        manifest = backup(Stack(load_settings()), dest, progress=console.print)
    except BackupError as exc:
        fail(str(exc))
    console.print(f"backup in {dest} ({manifest['seconds']} s)")


@stack.command("restore")
def stack_restore(
    src: Path = typer.Argument(..., help="a folder `gifqa stack backup` made"),
) -> None:
    """Build the stack in its home (GIFQA_STACK_HOME, which must be new) from the backup in
    SRC, and start it: the same runs, versions, champion, flow runs and data versions."""
    from flows.backup import BackupError, restore

    try:
        stack = restore(src, progress=console.print)
    except BackupError as exc:
        fail(str(exc))
    console.print(f"stack restored in {stack.home}; `gifqa stack env` for its addresses")


@stack.command("env")
def stack_env() -> None:
    """`export` lines for a shell: `eval "$(gifqa stack env)"`."""
    import shlex

    from flows.stack import client_env, load_settings

    for key, value in client_env(load_settings()).items():
        print(f"export {key}={shlex.quote(value)}")


@stack.command("add-user")
def stack_add_user(
    user: str = typer.Option(..., envvar="GIFQA_MLFLOW_READER_USER"),
    password: str = typer.Option(..., envvar="GIFQA_MLFLOW_READER_PASSWORD"),
) -> None:
    """Create a read-only MLflow user (as the admin in MLFLOW_TRACKING_USERNAME/PASSWORD on
    MLFLOW_TRACKING_URI); compose runs it once for the API service's identity."""
    import os

    from flows.stack import ensure_user

    ensure_user(
        os.environ["MLFLOW_TRACKING_URI"],
        (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]),
        user,
        password,
    )
    console.print(f"MLflow user {user}: ready (reads; writes only what an admin grants)")


@app.command(rich_help_panel=OPERATE)
def deploy(
    project: Path = typer.Option(Path("."), help="project folder the runs work in"),
    pool: str = typer.Option("gifqa", help="process work pool"),
) -> None:
    """Create the work pool and the retrain (cron) and watch-data (interval) deployments."""
    from flows.deploy import deploy as make

    ids = make(project, pool)
    console.print(
        f"deployed gifqa-retrain/retrain and gifqa-watch-data/watch-data on pool "
        f"{pool} ({', '.join(i[:8] for i in ids)})"
    )


if __name__ == "__main__":
    from gifqa_model.core.quick_exit import run_then_exit

    run_then_exit(app)
