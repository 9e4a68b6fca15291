"""After a successful run: record it in git, push its data to the DVC remote, collect garbage.

A run is published only when a DVC remote is configured (the local stack or production); the
embedded `make demo` has none and its workspace is left as it is.

- `commit_run`: dvc.lock, data.dvc and the metrics in one git commit; the champion's commit
  carries the git tag `gifqa-champion`, so retention can find it.
- `push`: `dvc push` to the default remote (retried by the flow: an object store that is down
  is transient; after the retries the run fails clearly and the workspace is intact).
- `collect_garbage`: `dvc gc` keeping the workspace, every tag (the champion) and the last
  `deploy.keep_runs` commits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gifqa_model.core.config import load_params
from tasks.stages import stage_env

REMOTE = "stack"
CHAMPION_TAG = "gifqa-champion"
BOT = ["-c", "user.name=gifqa-pipeline", "-c", "user.email=pipeline@gifqa.invalid"]


def _run(cmd: list[str], project: Path, what: str) -> str:
    proc = subprocess.run(cmd, cwd=project, env=stage_env(), text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()[-3000:]}"
        )
    return proc.stdout


def dvc(project: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], project, f"dvc {args[0]}")


def configure_remote(project: Path, url: str, endpoint: str | None = None) -> None:
    """The default DVC remote, in `.dvc/config.local` (untracked: each workspace its own);
    credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""
    dvc(project, "remote", "add", "--local", "--force", "--default", REMOTE, url)
    if endpoint:
        dvc(project, "remote", "modify", "--local", REMOTE, "endpointurl", endpoint)


def remote_configured(project: Path) -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "default"],
        cwd=project,
        env=stage_env(),
        text=True,
        capture_output=True,
    )
    return proc.returncode == 0 and bool(proc.stdout.strip())


def is_git_repo(project: Path) -> bool:
    return (project / ".git").exists()


def commit_run(project: Path, message: str, champion: bool) -> str | None:
    """Commit what the run changed; returns the commit (None when not a git repository)."""
    if not is_git_repo(project):
        return None
    pin = load_params(project / "params.yaml").clip.fit_set_file  # the CLIP fit set
    paths = [p for p in ("dvc.lock", "data.dvc", "metrics", pin) if (project / p).exists()]
    _run(["git", "add", "--", *paths], project, "git add")
    staged = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=project).returncode
    if staged:
        _run(["git", *BOT, "commit", "-q", "-m", message], project, "git commit")
    head = _run(["git", "rev-parse", "HEAD"], project, "git rev-parse").strip()
    if champion:
        _run(["git", "tag", "-f", CHAMPION_TAG, head], project, "git tag")
    return head


def push(project: Path) -> str:
    return dvc(project, "push", "--jobs", str(max(1, (os.cpu_count() or 2))))


def collect_garbage(project: Path, keep_runs: int) -> str:
    """Drop cached data that neither the workspace, the champion (a tag) nor the last
    `keep_runs` commits use. Only the local cache: the remote keeps every version."""
    args = ["gc", "--force", "--workspace", "--all-tags"]
    if is_git_repo(project):
        args += ["--rev", "HEAD", "--num", str(keep_runs)]
    return dvc(project, *args)


def unique_bytes(*roots: Path) -> int:
    """Bytes of the files under `roots`, each inode once (a hard link is not a second copy)."""
    seen, total = set(), 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
    return total


def cache_bytes(project: Path) -> int:
    """Bytes of the DVC cache on disk."""
    return unique_bytes(project / ".dvc" / "cache")
