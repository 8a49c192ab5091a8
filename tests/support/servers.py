"""Real servers for tests, each on a free port of 127.0.0.1, started and stopped by the same code:
a throwaway PostgreSQL cluster, an S3-compatible endpoint (moto) and an MLflow tracking server
that keeps runs in PostgreSQL and proxies artifacts to the bucket, as in docs/team.md."""

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

from tests.support.harness import free_port, running, tracking_server, venv_bin

# Any non-empty pair: moto accepts every key. Given to the S3 endpoint's users only (the MLflow
# server and `dvc push/pull`); pipeline clients get the tracking URL and nothing else.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "team-test",
    "AWS_SECRET_ACCESS_KEY": "team-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
POSTGRES_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found; install them with "
    "`apt-get install -y postgresql` (`make test` does: tests/system-packages)"
)


def postgres_bin() -> Path:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise RuntimeError(POSTGRES_MISSING)
    return Path(initdb).parent


@contextmanager
def postgres(database: str = "mlflow") -> Iterator[str]:
    """A new PostgreSQL cluster in a temporary folder; yields the SQLAlchemy URI of an empty database.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
    the Debian package creates. Trust authentication: only this machine's 127.0.0.1 can connect.
    """
    bin_dir, port = postgres_bin(), free_port()
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="pg-"))  # not under pytest's root-only tmp folder
    data = folder / "data"
    if as_owner:
        shutil.chown(folder, "postgres", "postgres")

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_owner, *cmd], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stdout}{done.stderr}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "server.log"),
        "-w",
        "-t",
        "60",
        "start",
        "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off",
    )
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", database)
        yield f"postgresql://mlflow@127.0.0.1:{port}/{database}"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def s3_endpoint(log_dir: Path, bucket: str) -> Iterator[str]:
    """moto's S3-compatible server with one empty bucket; yields its endpoint URL."""
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(venv_bin()) / "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running(cmd, f"{url}/moto-api/", cwd=log_dir):
        boto3.client("s3", endpoint_url=url, **boto3_credentials()).create_bucket(Bucket=bucket)
        yield url


class Boto3Credentials(TypedDict):
    aws_access_key_id: str
    aws_secret_access_key: str
    region_name: str


def boto3_credentials() -> Boto3Credentials:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@contextmanager
def mlflow_server(log_dir: Path, backend_uri: str, artifacts: str, s3_url: str) -> Iterator[str]:
    """`mlflow server` as docs/team.md runs it; only the server holds the S3 endpoint and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env |= S3_CREDENTIALS | {"MLFLOW_S3_ENDPOINT_URL": s3_url}
    with tracking_server(log_dir, backend_uri, artifacts, "--serve-artifacts", env=env) as url:
        yield url
