"""infra/: no container engine runs here, so the compose file is checked as data: against the
compose specification's JSON schema, for secrets written into it, for ports open beyond
127.0.0.1, and for commands the installed `gifqa` does not have; the training image and the GPU
work pool's job template likewise."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "infra" / "docker-compose.yml"
# the compose specification's schema, as docker-compose 1.29.2 ships it (fetched from PyPI once)
SCHEMA_WHEEL = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"


@pytest.fixture(scope="session")
def compose_schema() -> dict:
    cache = REPO / ".venv" / "downloads"
    wheels = sorted(cache.glob("docker_compose-1.29.2-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                SCHEMA_WHEEL,
                "-d",
                str(cache),
            ],
            check=True,
            capture_output=True,
        )
        wheels = sorted(cache.glob("docker_compose-1.29.2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        return json.loads(z.read(SCHEMA_MEMBER))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_schema(compose, compose_schema) -> None:
    jsonschema.Draft7Validator(compose_schema).validate(compose)
    broken = dict(compose, services={"api": {"image": 3, "ports": "8000"}})
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a bad file
        jsonschema.Draft7Validator(compose_schema).validate(broken)


def test_compose_runs_the_whole_stack_and_the_api(compose) -> None:
    assert {"postgres", "minio", "mlflow", "prefect-server", "worker", "api"} <= set(
        compose["services"]
    )
    api = compose["services"]["api"]
    assert "gifqa serve" in api["command"] and "/healthz" in json.dumps(api["healthcheck"])
    assert api["environment"]["GIFQA_MODEL_URI"] == "models:/gifqa@champion"


def test_no_secret_is_written_in_compose_and_no_port_is_public(compose) -> None:
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", key):
                assert str(value).startswith("${"), f"{name}.{key} is written in the file"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"
    for match in re.finditer(r"postgresql(?:\+asyncpg)?://[^:]+:([^@]+)@", COMPOSE.read_text()):
        assert match.group(1).startswith("${"), "a database password is written in a URL"


def assert_gifqa_command(words: list[str], where: str) -> None:
    """`gifqa <command> --option ...` is a command of the installed `gifqa` with those options."""
    from typer.main import get_command

    from flows.cli import app

    assert words[:1] == ["gifqa"], where
    commands = get_command(app).commands
    assert words[1] in commands, f"{where}: gifqa has no command {words[1]}"
    options = {o for p in commands[words[1]].params for o in p.opts}
    for word in words[2:]:
        if word.startswith("--"):
            assert word in options, f"{where}: gifqa {words[1]} has no {word}"


def test_compose_commands_exist_in_the_cli(compose) -> None:
    for name, svc in compose["services"].items():
        words = str(svc.get("command", "")).split()
        if words[:1] == ["gifqa"]:
            assert_gifqa_command(words, name)


TRAIN_IMAGE = REPO / "infra" / "Dockerfile.train"
GPU_POOL = REPO / "infra" / "k8s" / "gpu-work-pool.json"


def test_training_image_installs_the_project_and_runs_a_gifqa_command() -> None:
    text = TRAIN_IMAGE.read_text()
    assert re.search(r"^RUN pip install -e \.", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd, "Dockerfile.train has no exec-form CMD"
    assert_gifqa_command(json.loads(cmd.group(1)), "Dockerfile.train")


def test_gpu_work_pool_template_is_one_prefect_accepts_and_asks_for_gpus() -> None:
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import apply_values
    from prefect.workers.base import BaseJobConfiguration

    template = json.loads(GPU_POOL.read_text())
    validate_base_job_template(template)  # the server's check: every placeholder declared
    properties = template["variables"]["properties"]
    for schema in properties.values():
        if "default" in schema:
            jsonschema.validate(schema["default"], schema)
    # rendered with the defaults, as the worker does for a run that overrides nothing
    values = {
        **BaseJobConfiguration._get_base_config_defaults(properties),
        "name": "retrain-1",
        "command": "prefect flow-run execute",
    }
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    # what prefect-kubernetes' worker refuses a job manifest without
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]) and pod["nodeSelector"]
    # the training image, by the name Dockerfile.train and the README build it as
    name = re.search(r"-f infra/Dockerfile\.train -t (\S+)", TRAIN_IMAGE.read_text()).group(1)
    assert container["image"].split(":")[0] == name
    assert f"-f infra/Dockerfile.train -t {name}" in (REPO / "README.md").read_text()
    assert "MLFLOW_TRACKING_URI" in container["env"]
    assert not any(re.search(r"PASSWORD|SECRET|ACCESS_KEY", k) for k in container["env"])


def test_compose_keeps_every_stateful_services_data_on_a_named_volume(compose) -> None:
    """The databases, the object store, the auth database and the workspace live on named
    volumes (declared at the top level): `docker compose down && up` keeps them."""
    declared = set(compose["volumes"])
    where = {"postgres": "/var/lib/postgresql/data", "minio": "/data", "mlflow": "/auth"}
    for service, path in where.items():
        mounts = [str(v) for v in compose["services"][service]["volumes"]]
        named = [m.split(":")[0] for m in mounts if m.split(":")[1] == path]
        assert named and named[0] in declared, (service, mounts)
    minio = compose["services"]["minio"]
    assert "server /data" in minio["command"]  # the store writes where the volume is


def test_compose_workers_flow_runs_send_the_heartbeats_the_crash_automation_waits_for(
    compose,
) -> None:
    """A run whose process dies is marked Crashed `deploy.crash_after_s` after its last
    heartbeat: the worker's runs must beat, at the local stack's period, well within that,
    and no window that params.yaml accepts is short enough to crash a live run."""
    from pydantic import ValidationError

    from flows.stack import HEARTBEAT_S
    from gifqa_model.core.config import DeployParams

    env = compose["services"]["worker"]["environment"]
    assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) == HEARTBEAT_S
    # one late heartbeat does not crash a live run: the shortest window is past two beats
    DeployParams(crash_after_s=2 * HEARTBEAT_S + 1)
    with pytest.raises(ValidationError):
        DeployParams(crash_after_s=2 * HEARTBEAT_S)
    assert DeployParams().crash_after_s > 2 * HEARTBEAT_S


def test_make_test_prints_its_seed_and_the_same_seed_gives_the_same_order() -> None:
    """`make test` draws one seed, prints it and hands it to pytest; `make test SEED=<it>`
    reruns that order."""
    import os

    # not the flags of a `make test` this suite may run under (its SEED= would be inherited)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def dry_run(*args: str) -> str:
        cmd = ["make", "-n", "test", *args]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True).stdout

    dry = dry_run()
    printed = re.search(r"test order seed: (\d+)", dry).group(1)
    assert f"--random-order-seed={printed} " in dry  # the one printed, not a second draw
    pinned = dry_run("SEED=4242")
    assert "--random-order-seed=4242 " in pinned and "test order seed: 4242" in pinned

    def order(seed: int) -> list[str]:
        cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        cmd += ["--random-order-bucket=module", f"--random-order-seed={seed}"]
        out = subprocess.run(
            [*cmd, "tests/gifqa_model/test_config.py"], cwd=REPO, capture_output=True, text=True
        ).stdout
        return [line for line in out.splitlines() if "::" in line]

    # a module of twenty-odd tests that imports little (the seed orders the tests inside a
    # module too): three collections, not three imports of torch or spaCy
    first = order(4242)
    assert len(first) >= 10 and order(4242) == first and order(4243) != first
