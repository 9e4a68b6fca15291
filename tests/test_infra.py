"""infra/: no container engine runs here, so the compose file is checked as data: against the
compose specification's JSON schema, for secrets written into it, for ports open beyond
127.0.0.1, and for commands the installed `gifqa` does not have."""

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
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        SCHEMA_WHEEL, "-d", str(cache)], check=True, capture_output=True)
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
        compose["services"])
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


def test_compose_commands_exist_in_the_cli(compose) -> None:
    from typer.main import get_command

    from flows.cli import app

    commands = get_command(app).commands
    for name, svc in compose["services"].items():
        words = str(svc.get("command", "")).split()
        if words[:1] == ["gifqa"]:
            cmd = commands[words[1]]
            options = {o for p in cmd.params for o in p.opts}
            for word in words[2:]:
                if word.startswith("--"):
                    assert word in options, f"{name}: gifqa {words[1]} has no {word}"
