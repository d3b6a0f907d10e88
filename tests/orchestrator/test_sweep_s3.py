"""A sweep whose ``--storage`` is an S3-compatible store named by endpoint in the URI's query
(MinIO on a cluster without shared disks): a real S3 server (moto's) on loopback.

Tune's state, the trials' checkpoints and ``--resume`` all go through pyarrow's S3 client; the
sweep's name was appended after the query (``...&region=us-east-1/<name>``) before."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ablate_sweep_helpers import mlflow_uri, write_space

from orchestrator import tracking
from orchestrator.cli import main
from tests.cluster.cluster_harness import free_port

moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (the dev extra)")

# Set before the module's Ray starts: its workers write the trials' checkpoints to the store.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ablate", "AWS_SECRET_ACCESS_KEY": "ablate-test"}

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_store", "local_ray", "sweep_workdir")]


@pytest.fixture(scope="module")
def s3_store() -> Iterator[str]:
    """A storage URI into a fresh bucket of a real S3 server on 127.0.0.1."""
    from pyarrow import fs

    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    filesystem, _ = fs.FileSystem.from_uri(f"s3://ablate?{query}&allow_bucket_creation=true")
    filesystem.create_dir("ablate")
    yield f"s3://ablate/sweeps?{query}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_a_sweep_stores_and_resumes_in_an_s3_compatible_store(
    s3_store: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyarrow import fs

    uri = mlflow_uri(tmp_path)
    space = write_space(tmp_path, "name: minio\nextends: trial.yaml\nseeds: 2\n")
    args = ["sweep", str(space), "--tracking-uri", uri, "--storage", s3_store]
    assert main(args) == 0
    folder = s3_store.replace("/sweeps?", "/sweeps/minio?")
    assert f"sweep minio: 2 finished; Tune state in {folder}" in capsys.readouterr().err
    filesystem, path = fs.FileSystem.from_uri(folder)
    stored = {info.base_name for info in filesystem.get_file_info(fs.FileSelector(path))}
    assert "ablate_sweep.json" in stored and "tuner.pkl" in stored
    assert main([*args, "--resume"]) == 0  # read back from the store: nothing left to run
    assert "sweep minio: 2 finished" in capsys.readouterr().err
    client = tracking.connect(uri)
    experiment = client.get_experiment_by_name("minio")
    runs = client.search_runs([experiment.experiment_id], "tags.`ablate.kind` = 'trial'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
