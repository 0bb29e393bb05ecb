"""The secret channel (issue 9 item 11): a stage reads a secret, and nothing Sluice writes holds it."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sluice.engine.secret import MASK, Masker
from tests.conftest import Result, Workspace

TOKEN = "tok-7f3a9c-s3cr3t-e41d"
FILE_TOKEN = "ftok-0b22-hush-9d1e"
REPO = Path(__file__).resolve().parents[2]

CMD_STAGES = """\
version: 1
stages:
  env_secret:
    cmd: |
      echo "token is $API_TOKEN"
      printf 'split %s' "$${API_TOKEN:0:5}"; sleep 0.2; echo "$${API_TOKEN:5}"
      python3 -c 'import os, hashlib; print(hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest())' > ${outputs.digest}
      echo "to stderr: $API_TOKEN" >&2
    outputs: {digest: out/digest.txt}
    secrets:
      API_TOKEN: {env: SLUICE_TEST_API_TOKEN}
  file_secret:
    cmd: 'echo "file token $KEY"; printf %s "$KEY" | wc -c > ${outputs.n}; exit ${params.code}'
    outputs: {n: out/n.txt}
    secrets:
      KEY: {file: @FILE@}
params:
  code: 0
"""

PLUGIN = '''\
import hashlib
from sluice.engine.plugin import Plugin, Port, StageFailed, write_json


class Leaky(Plugin):
    """Does everything a careless plugin might do with its secret."""

    name = "acme.leaky"
    version = "1"
    inputs = ()
    outputs = (Port("out"),)

    def run(self, ctx):
        token = ctx.secrets["TOKEN"]
        ctx.log.info("using token %s for %r", token, ctx)
        print("printed:", token, flush=True)
        write_json(ctx.outputs["out"], {"sha256": hashlib.sha256(token.encode()).hexdigest()})
        if ctx.config.get("fail") == "stagefailed":
            raise StageFailed(f"the service refused token {token}", f"request: Authorization: Bearer {token}")
        if ctx.config.get("fail") == "crash":
            raise RuntimeError(f"bug with {token}")
'''


def _everything(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def assert_nowhere(secret: str, ws: Workspace, *texts: str, extra: tuple[Path, ...] = ()) -> None:
    """Neither the workspace (lock, .sluice: run records, logs, cache, state), nor `extra` files, nor `texts` hold it."""
    needle = secret.encode()
    found = [str(p) for root in (ws.root, *extra) for p in ([root] if root.is_file() else _everything(root)) if needle in p.read_bytes()]
    assert not found, f"secret found in {found}"
    for text in texts:
        assert secret not in text, text


def _with_plugin(ws: Workspace) -> dict[str, str]:
    """acme.leaky installed the way a package installs it, outside the workspace."""
    site = ws.root.parent / f"{ws.root.name}-site"
    (site / "acme_leaky-0.1.dist-info").mkdir(parents=True, exist_ok=True)
    (site / "acme_leaky.py").write_text(PLUGIN)
    (site / "acme_leaky-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-leaky\nVersion: 0.1\n")
    (site / "acme_leaky-0.1.dist-info" / "entry_points.txt").write_text("[sluice.stages]\nacme.leaky = acme_leaky:Leaky\n")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


def _cmd_workspace(ws: Workspace, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    secret_file = tmp_path.parent / f"{tmp_path.name}-key.txt"
    secret_file.write_text(FILE_TOKEN + "\n")
    ws.write("pipeline.yaml", CMD_STAGES.replace("@FILE@", str(secret_file)))
    return secret_file, {"SLUICE_TEST_API_TOKEN": TOKEN}


def test_cmd_stages_get_their_secrets_and_nothing_written_holds_them(ws: Workspace, tmp_path: Path) -> None:
    _, env = _cmd_workspace(ws, tmp_path)
    assert ws.sluice("validate", env=env).code == 0
    res = ws.sluice("run", env=env)
    assert res.code == 0, res.out + res.err
    # The stages saw the real values...
    assert ws.read("out/digest.txt").strip() == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert ws.read("out/n.txt").strip() == str(len(FILE_TOKEN))
    # ...and their logs show the mask, even for a value printed in two pieces.
    logs = "".join(p.read_text() for p in (ws.root / ".sluice").rglob("*.log"))
    assert f"token is {MASK}" in logs and f"split {MASK}" in logs and f"to stderr: {MASK}" in logs and f"file token {MASK}" in logs
    runs = ws.sluice("run", "--json", "--force", env=env)
    failed = ws.sluice("run", "--set", "code=3", env=env)  # a failure prints the log tail
    assert failed.code == 1 and f"file token {MASK}" in failed.out + failed.err, failed.out + failed.err
    status = ws.sluice("status", env=env)
    for secret in (TOKEN, FILE_TOKEN):
        assert_nowhere(secret, ws, res.out, res.err, runs.out, runs.err, failed.out, failed.err, status.out)


def test_a_changed_secret_does_not_rerun_a_stage(ws: Workspace, tmp_path: Path) -> None:
    """Its value is in no fingerprint: only what the stage writes says it changed."""
    _, env = _cmd_workspace(ws, tmp_path)
    assert ws.sluice("run", env=env).code == 0
    again = ws.sluice("run", "--json", env={"SLUICE_TEST_API_TOKEN": "another-token-1234"})
    assert {k: v["outcome"] for k, v in again.json()["stages"].items()} == {"env_secret": "skipped", "file_secret": "skipped"}


def test_plugin_stages_read_ctx_secrets_and_every_trace_is_masked(ws: Workspace) -> None:
    env = {**_with_plugin(ws), "LEAKY": TOKEN}
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          ok:
            uses: acme.leaky
            outputs: {out: out/ok.json}
            secrets: {TOKEN: {env: LEAKY}}
          refused:
            uses: acme.leaky
            with: {fail: stagefailed}
            outputs: {out: out/refused.json}
            secrets: {TOKEN: {env: LEAKY}}
          crashed:
            uses: acme.leaky
            with: {fail: crash}
            outputs: {out: out/crashed.json}
            secrets: {TOKEN: {env: LEAKY}}
        """,
    )
    res = ws.sluice("run", "--json", env=env)
    assert res.code == 1, res.out + res.err
    stages = res.json()["stages"]
    assert stages["ok"]["outcome"] == "ran"
    assert json.loads(ws.read("out/ok.json"))["sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert stages["refused"]["error"] == f"the service refused token {MASK}"
    assert stages["crashed"]["error"].startswith(f"acme.leaky raised RuntimeError: bug with {MASK}; traceback in ")
    logs = "".join(p.read_text() for p in (ws.root / ".sluice").rglob("*.log"))
    assert f"using token {MASK}" in logs and f"printed: {MASK}" in logs
    console = ws.sluice("run", env=env)
    assert f"the service refused token {MASK}" in console.out + console.err
    assert f"request: Authorization: Bearer {MASK}" in console.out + console.err
    assert_nowhere(TOKEN, ws, res.out, res.err, console.out, console.err)


def test_secrets_are_never_interpolated(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          a:
            cmd: 'curl -H "Authorization: ${secrets.TOKEN}" https://example.com > ${outputs.o}'
            outputs: {o: o.txt}
            secrets: {TOKEN: {env: T}}
          b:
            uses: util.copy
            with: {pairs: {src: "${secrets.TOKEN}"}}
            inputs: {src: o.txt}
            outputs: {dst: p.txt}
          c:
            cmd: 'true'
            secrets: {BOTH: {env: A, file: b}}
          d:
            cmd: 'true'
            env: {TOKEN: x}
            secrets: {TOKEN: {env: T}}
        """,
    )
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    text = res.out + res.err
    assert (
        "pipeline.yaml:4:10: stages.a.cmd: '${secrets.TOKEN}': secrets are never interpolated; declare it under the stage's"
        " secrets: and read it as $TOKEN in cmd (an environment variable) or ctx.secrets['TOKEN'] in a plugin"
    ) in text
    assert "pipeline.yaml:9:25: stages.b.with.pairs.src: '${secrets.TOKEN}': secrets are never interpolated" in text
    assert "pipeline.yaml:14:21: stages.c.secrets.BOTH: needs exactly one of 'env' or 'file', has both" in text
    assert "pipeline.yaml:18:22: stages.d.secrets.TOKEN: 'TOKEN' is both in env and in secrets; keep it in one" in text


def test_a_missing_secret_stops_the_run_before_any_stage_naming_stage_and_source(ws: Workspace, tmp_path: Path) -> None:
    secret_file, env = _cmd_workspace(ws, tmp_path)
    secret_file.unlink()
    res = ws.sluice("run", env={**env, "SLUICE_TEST_API_TOKEN": ""})
    assert res.code == 2, res.out + res.err
    text = res.out + res.err
    assert (
        "pipeline.yaml:11:18: stages.env_secret.secrets.API_TOKEN: stage 'env_secret' needs secret API_TOKEN"
        " from environment variable SLUICE_TEST_API_TOKEN, which is empty"
    ) in text
    assert f"stages.file_secret.secrets.KEY: stage 'file_secret' needs secret KEY from file {secret_file}, which cannot be read" in text
    assert not (ws.root / "out").exists()
    unset = ws.sluice("run", "env_secret")
    assert "from environment variable SLUICE_TEST_API_TOKEN, which is not set" in unset.out + unset.err


def test_a_value_split_across_reads_is_still_masked() -> None:
    import io

    read, write = os.pipe()
    sink = io.BytesIO()
    sink.close = lambda: None  # type: ignore[method-assign]
    pump = Masker(["abcdef"]).pump(os.fdopen(read, "rb"), sink)
    for piece in (b"x abc", b"de", b"f y abcdef\n"):
        os.write(write, piece)
        threading.Event().wait(0.15)
    os.close(write)
    pump.close()
    assert sink.getvalue() == b"x *** y ***\n"


# ---------------------------------------------------------------- docker.build and k8s.manifests


@contextmanager
def _index_recording_auth() -> Iterator[list[str]]:
    """A package index on 127.0.0.1 that has no packages and remembers each Authorization header."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        seen.append(f"port:{server.server_address[1]}")
        yield seen
    finally:
        server.shutdown()
        server.server_close()


DEPLOY = """\
version: 1
name: secret-test
stages:
  image:
    uses: docker.build
    with: {base_image: %(base)s, wheelhouse: true, network_mode: host, repository: sluice-test/secret, version: s1}
    inputs: {model: model}
    outputs: {image: deploy/image.json, context: deploy/context}
    secrets:
      PIP_EXTRA_INDEX_URL: {env: PRIVATE_INDEX}
  manifests:
    uses: k8s.manifests
    with:
      namespace: serving
      strategy: blue-green
      secret_env: {API_TOKEN: {secret: model-api, key: token}}
    inputs: {image: "${stages.image.outputs.image}"}
    outputs: {manifests: deploy/manifests}
"""


@pytest.mark.docker
def test_docker_build_uses_the_secret_on_the_host_only_and_manifests_reference_a_secret(
    docker_engine: str, model_dir: Path, ws: Workspace
) -> None:
    import docker

    shutil.copytree(model_dir, ws.root / "model")
    ws.write("pipeline.yaml", DEPLOY % {"base": docker_engine})
    with _index_recording_auth() as seen:
        port = seen.pop(0).removeprefix("port:")
        password = "idx-" + TOKEN
        url = f"http://sluice:{password}@127.0.0.1:{port}/simple/"
        res: Result = ws.sluice("run", env={"PRIVATE_INDEX": url}, timeout=1800)
    assert res.code == 0, res.out + res.err
    # The download on the host used the credentials...
    assert f"Basic {base64.b64encode(f'sluice:{password}'.encode()).decode()}" in seen, seen
    # ...which are in no file, no log, no layer and no image setting.
    record = json.loads(ws.read("deploy/image.json"))
    api = docker.from_env().api
    history = json.dumps(api.history(record["image_id"]))
    config = json.dumps(api.inspect_image(record["image_id"]))
    for secret in (url, password):
        assert_nowhere(secret, ws, res.out, res.err, history, config)
    dockerfile = ws.read("deploy/context/Dockerfile")
    assert "PIP_EXTRA_INDEX_URL" not in dockerfile and "ARG" not in dockerfile and "--mount" not in dockerfile
    deployment = ws.read("deploy/manifests/deployment-app-blue.yaml")
    assert "secretKeyRef" in deployment and "model-api" in deployment


def test_manifests_reference_a_kubernetes_secret_and_pass_the_official_schemas(tmp_path: Path) -> None:
    import yaml

    from sluice.stages.k8s_manifests import ManifestsStage
    from tests.support.context import make_ctx

    config = {
        "image": "registry.example.com/m:1",
        "secret_env": {"API_TOKEN": {"secret": "model-api", "key": "token"}},
        "validate_against": "1.30",
    }
    ctx = make_ctx(tmp_path, config, outputs={"manifests": "manifests"})
    ManifestsStage().run(ctx)
    container = yaml.safe_load((ctx.outputs["manifests"] / "deployment-app.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-api", "key": "token", "optional": False}}}
    ]


def test_docker_build_refuses_secrets_a_build_step_would_need(tmp_path: Path, model_dir: Path) -> None:
    import dataclasses

    from sluice.engine.plugin import StageFailed
    from sluice.stages.docker_build import DockerBuildStage
    from tests.support.context import make_ctx

    ctx = dataclasses.replace(make_ctx(tmp_path, {}, {"model": model_dir}, {"image": "image.json"}), secrets={"PIP_INDEX_URL": TOKEN})
    with pytest.raises(
        StageFailed, match=r"docker.build hands secrets \(PIP_INDEX_URL\) only to the wheel download on the host: set wheelhouse: true"
    ):
        DockerBuildStage().run(ctx)
