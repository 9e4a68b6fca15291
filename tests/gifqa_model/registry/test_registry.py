"""Registry aliases and the promotion gate, on a real SQLite MLflow store."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from gifqa_model.registry.versions import (
    CHALLENGER,
    CHAMPION,
    RegistryParams,
    alias_version,
    register,
)


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture()
def client(tmp_path, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    # artifacts into the temp dir too, not ./mlruns
    mlflow.create_experiment("registry-test", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_experiment("registry-test")
    return MlflowClient(uri)


def _logged_model() -> tuple[str, str]:
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo(),
                                       pip_requirements=["mlflow"])
    return info.model_uri, run.info.run_id


def test_first_version_is_champion_then_gate_decides(client: MlflowClient) -> None:
    params = RegistryParams(model_name="gifqa-test", min_improvement=0.01)
    first = register(client, *_logged_model(), accuracy=0.50, params=params)
    assert first["version"] == 1 and first["promoted"] and first["champion_version"] == 1

    worse = register(client, *_logged_model(), accuracy=0.505, params=params)
    assert worse["version"] == 2 and not worse["promoted"]
    assert alias_version(client, "gifqa-test", CHALLENGER) == 2
    assert alias_version(client, "gifqa-test", CHAMPION) == 1

    better = register(client, *_logged_model(), accuracy=0.60, params=params)
    assert better["promoted"] and alias_version(client, "gifqa-test", CHAMPION) == 3
    assert client.get_model_version("gifqa-test", "3").tags["accuracy"].startswith("0.6")
