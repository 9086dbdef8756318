"""Weights sources on the local service, as Baseten's BDN does them: mirrored once while
the job is CREATED into a cache later jobs reuse, filtered by allow/ignore patterns,
read with the source's secret, and mounted read-only at ``mount_location`` in each
node's own view (this machine's ``/`` is never touched). ``https://`` and ``s3://`` run
against local servers (a TLS server here, the S3 stand-in); ``hf://`` uses Hugging
Face's own download code, and here its hub is unreachable: one clear line."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from IPython.core.error import UsageError

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import ApiError
from bt_jupyter.jobs import Client, Job
from bt_jupyter.local import jobroot
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.store import new_id
from bt_jupyter.local.weights import cache_key, wanted
from bt_jupyter.widgets.job import JobWidget
from tests.adversarial.checks import assert_one_clear_line, unchanged
from tests.conftest import magics_on
from tests.helpers import messages, running_service, submit, wait_for, wait_terminal
from tests.test_cloud import s3_endpoint  # noqa: F401

pytestmark = pytest.mark.skipif(
    jobroot.unshare_prefix() is None, reason="no private mount namespace on this machine"
)
S = spec.TrainingJobStatus
WEIGHTS_BUCKET = "weights-bucket"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made here: the TLS server's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bt_jupyter.local.ssh_authority import loopback_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    cert = loopback_certificate(key, "127.0.0.1", days=1)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Served:
    url: str
    cert: Path
    requests: list[str]
    #: ``/slow/...`` answers only once this is set
    release: threading.Event


@pytest.fixture(scope="module")
def https_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A TLS file server on 127.0.0.1 that counts what it was asked for."""
    root = tmp_path_factory.mktemp("https")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"hidden": 32}')
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    requests: list[str] = []
    release = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path.startswith("/slow/"):
                release.wait(120)
                self.path = self.path.removeprefix("/slow")
            if self.path.startswith("/private/"):
                if self.headers.get("Authorization") != "Bearer https-token-value":
                    self.send_error(401)
                    return
                self.path = self.path.removeprefix("/private")
            super().do_GET()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"https://127.0.0.1:{server.server_address[1]}", cert, requests, release)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Service:
    home: Home
    client: ApiClient


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    https_files: Served,
    s3_endpoint: str,  # noqa: F811
) -> Iterator[Service]:
    """A local service that trusts the TLS server, reads S3 from the stand-in, and has
    no Hugging Face Hub to reach."""
    home = Home(tmp_path_factory.mktemp("bt_weights"))
    settings = {
        "SSL_CERT_FILE": str(https_files.cert),
        "BT_JUPYTER_SERVICE_S3_ENDPOINT": s3_endpoint,
        "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    with running_service(home, **settings), ApiClient.local(home.root) as client:
        yield Service(home, client)


def _weights_job(
    client: ApiClient, commands: list[str], *sources: spec.WeightsSource
) -> api.TrainingJobV1:
    project = client.upsert_project(f"weights-{new_id()}")
    return submit(client, project, commands, weights=list(sources))


@pytest.mark.timeout(120)
def test_https_weights_are_mirrored_once_and_mounted_read_only(
    service: Service, https_files: Served
) -> None:
    source = spec.WeightsSource(
        source=f"{https_files.url}/model/config.json", mount_location="/models/base"
    )
    commands = [
        "cat /models/base/config.json; echo",
        "touch /models/base/new 2>/dev/null && echo writable || echo read-only",
    ]
    first = _weights_job(service.client, commands, source)
    assert wait_terminal(service.client, first).status == S.COMPLETED
    said = messages(service.client, first, node=None)
    assert any("mirrored 1 file" in m for m in said), said
    assert messages(service.client, first, node="0") == ['{"hidden": 32}', "read-only"]
    history = [s for s, _ in service.client.history(first.training_project_id, first.id)]
    assert history[:3] == [S.CREATED, S.DEPLOYING, S.RUNNING]  # mirrored while CREATED

    again = _weights_job(service.client, ["ls /models/base"], source)
    assert wait_terminal(service.client, again).status == S.COMPLETED
    assert any("in the cache" in m for m in messages(service.client, again, node=None))
    assert messages(service.client, again, node="0") == ["config.json"]
    assert https_files.requests.count("/model/config.json") == 1  # mirrored once
    assert not Path("/models").exists()  # this machine's / is untouched


@pytest.mark.timeout(120)
def test_a_private_https_source_reads_its_secret_and_never_shows_it(
    service: Service, https_files: Served
) -> None:
    SecretStore(service.home).set("https_weights", "https-token-value")
    source = spec.WeightsSource(
        source=f"{https_files.url}/private/model/config.json",
        mount_location="/data/private",
        auth_secret_name="https_weights",
    )
    job = _weights_job(service.client, ["cat /data/private/config.json"], source)
    assert wait_terminal(service.client, job).status == S.COMPLETED
    assert messages(service.client, job, node="0") == ['{"hidden": 32}']
    lines = messages(service.client, job, node="any")
    assert not [m for m in lines if "https-token-value" in m]


@pytest.mark.timeout(120)
def test_s3_weights_honour_patterns_and_their_credentials(
    service: Service,
    s3_endpoint: str,  # noqa: F811
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
    s3.create_bucket(Bucket=WEIGHTS_BUCKET)
    keys = ["llm/model.safetensors", "llm/config.json", "llm/README.md"]
    keys += ["llm/sub/extra.safetensors", "llm/other.bin", "elsewhere/x.safetensors"]
    for key in keys:
        s3.put_object(Bucket=WEIGHTS_BUCKET, Key=key, Body=key.encode())
    SecretStore(service.home).set(
        "s3_weights", json.dumps({"access_key_id": "x", "secret_access_key": "x"})
    )
    source = spec.WeightsSource(
        source=f"s3://{WEIGHTS_BUCKET}/llm",
        mount_location="/models/llm",
        auth_secret_name="s3_weights",
        allow_patterns=["*.safetensors", "config.json", "*.md"],
        ignore_patterns=["README*"],
    )
    job = _weights_job(service.client, ["cd /models/llm && find . -type f | sort"], source)
    assert wait_terminal(service.client, job).status == S.COMPLETED
    assert messages(service.client, job, node="0") == [
        "./config.json",
        "./model.safetensors",
        "./sub/extra.safetensors",
    ]


def test_hf_weights_without_a_reachable_hub_fail_in_one_line(service: Service) -> None:
    source = spec.WeightsSource(source="hf://Qwen/Qwen3-0.6B", mount_location="/models/base")
    job = _weights_job(service.client, ["true"], source)
    done = wait_terminal(service.client, job, timeout=90)
    assert done.status == S.DEPLOY_FAILED
    assert_one_clear_line(done.error_message or "", "hf://Qwen/Qwen3-0.6B", "could not be reached")


def test_sources_only_baseten_mirrors_and_missing_secrets_are_refused_up_front(
    service: Service,
) -> None:
    project = service.client.upsert_project(f"weights-refused-{new_id()}")
    with unchanged(service.home), pytest.raises(ApiError) as refused:
        submit(
            service.client,
            project,
            ["true"],
            weights=[spec.WeightsSource(source="gs://bucket/model", mount_location="/m")],
        )
    assert_one_clear_line(str(refused.value), "gs://", "mirrored by Baseten only")
    with magics_on(service.home, project.name) as shell:
        for line, mentions in (
            ("--weights hf://org/model --dry-run", ("SOURCE:/MOUNT",)),
            ("--weights hf://org/model:/etc/x --dry-run", ("system files",)),
            ("--weights hf://org/model:/models/a --weights-secret no_such", ("no_such",)),
            ("--weights ftp://host/x:/models/a --dry-run", ("scheme",)),
        ):
            with unchanged(service.home), pytest.raises(UsageError) as bad:
                shell.run_cell_magic("bt_train", line, "x = 1\n")
            assert_one_clear_line(str(bad.value), *mentions)


@pytest.mark.parametrize(
    ("path", "allow", "ignore", "kept"),
    [
        ("model.safetensors", ["*.safetensors"], None, True),
        ("sub/model.safetensors", ["*.safetensors"], None, True),
        ("sub/model.safetensors", ["sub/*"], ["*.bin"], True),
        ("README.md", None, ["*.md"], False),
        ("pytorch_model.bin", ["*.safetensors"], None, False),
        ("config.json", None, None, True),
    ],
)
def test_patterns_keep_what_bdn_keeps(
    path: str, allow: list[str] | None, ignore: list[str] | None, kept: bool
) -> None:
    source = spec.WeightsSource(
        source="hf://o/m", mount_location="/m", allow_patterns=allow, ignore_patterns=ignore
    )
    assert wanted(path, source) is kept


def test_the_cache_key_changes_with_what_is_asked_for() -> None:
    base = spec.WeightsSource(source="hf://o/m", mount_location="/a")
    moved = spec.WeightsSource(source="hf://o/m", mount_location="/b")
    filtered = spec.WeightsSource(source="hf://o/m", mount_location="/a", allow_patterns=["*.x"])
    assert cache_key(base, "sha1") == cache_key(moved, "sha1")  # where it goes: same files
    assert cache_key(base, "sha1") != cache_key(base, "sha2")  # a branch that moved
    assert cache_key(base, "sha1") != cache_key(filtered, "sha1")


@pytest.mark.timeout(120)
def test_mirroring_is_a_phase_of_created_and_a_stop_ends_it_at_once(
    service: Service, https_files: Served
) -> None:
    """The widget shows the mirroring while the job is CREATED; Stop does not wait for
    the download, and leaves no half-mirrored folder in the cache."""
    source = spec.WeightsSource(
        source=f"{https_files.url}/slow/model/config.json", mount_location="/models/slow"
    )
    wire = _weights_job(service.client, ["true"], source)
    job = Job(Client(service.client, "local", wire.training_project.name), wire)
    widget = JobWidget(job)
    try:
        wait_for(lambda: "mirroring for /models/slow" in widget.notice, 30, "the mirroring notice")
        assert widget.status == S.CREATED.value
        started = time.monotonic()
        job.stop()
        assert wait_terminal(service.client, wire, timeout=30).status == S.STOPPED
        assert time.monotonic() - started < 10
    finally:
        assert widget.watcher is not None
        widget.watcher.close()
        widget.close()
    cache = service.home.root / "weights"
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial-")]
