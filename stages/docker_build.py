"""docker.build: a serving image for one model, pinned to the libraries it was trained with."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, write_json
from sluice.stages._safe import control_characters, dockerfile_string, require_match, require_requirement, requirement_problems
from sluice.stages._tables import input_anchor, input_path, output_path

SERVING_DIR = Path(__file__).resolve().parent / "serving"
# Pinned to the host's versions: the app is tested against exactly these.
SERVING_PACKAGES = ("fastapi", "uvicorn", "prometheus_client")
MODEL_LIBRARIES = ("scikit-learn", "numpy", "pandas", "scipy", "joblib", "skops")  # each only if the model records it
APP_UID = 10001  # numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd
LOG_TAIL = 30


class DockerBuildStage(Plugin):
    name = "docker.build"
    version = "1"
    config_schema = schemas.load("stages/docker.build")
    inputs = (Port("model", desc="a model directory from sklearn.train"),)
    outputs = (Port("image", desc="JSON image record"), Port("context", required=False, desc="the generated build context"))

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        yield from control_characters(config)
        yield from requirement_problems(config.get("extra_requirements", ()), ("extra_requirements",))

    def preflight(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        try:
            docker_client().close()
        except StageFailed as exc:
            yield ConfigProblem(str(exc))

    def run(self, ctx: StageContext) -> None:
        from sluice.stages.serving.model import ModelError, read_verified

        cfg = self.with_defaults(ctx.config)
        if ctx.secrets and not cfg["wheelhouse"]:
            # The Docker SDK speaks only to the classic builder: no BuildKit secret mounts, and a
            # build argument or a copied file would stay in the image's history or a layer.
            raise StageFailed(
                f"docker.build hands secrets ({', '.join(sorted(ctx.secrets))}) only to the wheel download on the host:"
                " set wheelhouse: true, so no build step needs them"
            )
        model_dir = input_path(ctx, "model")
        try:
            # Read once and checked (against what the engine hashed, and expect_sha256 when given):
            # these bytes, and only these, go into the image, so a file swapped after the check never gets built in.
            meta, model_bytes = read_verified(model_dir, cfg.get("expect_sha256"), input_anchor(ctx, "model"))
        except ModelError as exc:
            raise StageFailed(str(exc)) from exc
        digest = hashlib.sha256(model_bytes).hexdigest()
        repository = cfg.get("repository") or f"sluice/{_slug(ctx.pipeline or 'model')}"
        tags = [f"{repository}:{cfg['version']}-{meta.version}", f"{repository}:{cfg['version']}"]
        with tempfile.TemporaryDirectory(prefix="sluice-build-") as tmp:
            context = ctx.outputs.get("context") or Path(tmp) / "context"
            python = _python_minor(meta.raw)
            requirements = pinned_requirements(meta.raw, cfg["extra_requirements"])
            labels = {
                "org.opencontainers.image.title": repository,
                "org.opencontainers.image.version": str(cfg["version"]),
                "dev.sluice.model.sha256": digest,
                "dev.sluice.pipeline": ctx.pipeline,
                **cfg["labels"],
            }
            client = docker_client(timeout=int(cfg["timeout"]))
            base = pin_base(cfg["base_image"], _local_repo_digests(client, cfg["base_image"]))
            write_context(context, model_dir, meta, requirements, {**cfg, "base_image": base}, python, labels, model_bytes=model_bytes)
            if cfg["wheelhouse"]:
                download_wheels(context / "wheels", context / "requirements.txt", python, ctx)
                # Every wheel the image installs, by hash: pip --require-hashes refuses any other file.
                (context / "requirements.txt").write_text("\n".join(hashed_requirements(context / "wheels")) + "\n")
            start = time.monotonic()
            image_id = build(client, context, tags[0], cfg.get("network_mode"), ctx)
            seconds = round(time.monotonic() - start, 1)
        image = client.images.get(image_id)
        for tag in tags[1:]:
            repo, _, name = tag.rpartition(":")
            image.tag(repo, name)
        record = {
            "image_id": image.id,
            "repo_digests": image.attrs.get("RepoDigests") or [],
            "tags": tags,
            # A digest pins the bytes once pushed; until then the hash-bearing tag is unique per model.
            "reference": (image.attrs.get("RepoDigests") or [tags[0]])[0],
            "base_image": cfg["base_image"],
            "base_image_pinned": base,  # by digest when the engine knows one (a pulled image), else as given
            "model_hash": digest,
            "model_version": meta.version,
            "port": cfg["port"],
            "python": python,
            "requirements": requirements,
            "size_bytes": image.attrs.get("Size"),
            "build_seconds": seconds,
        }
        write_json(output_path(ctx, "image"), record)
        ctx.log.info("built %s (%s) in %.1f s", tags[0], image.id[:19], seconds)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def _python_minor(meta: Mapping[str, Any]) -> str:
    full = str(meta.get("library_versions", {}).get("python", "")) or f"{sys.version_info[0]}.{sys.version_info[1]}"
    return ".".join(full.split(".")[:2])


def _local_repo_digests(client: Any, reference: str) -> list[str]:
    from docker.errors import DockerException

    try:
        return list(client.images.get(reference).attrs.get("RepoDigests") or [])
    except DockerException:  # not present yet: the build pulls it, by the reference as given
        return []


def pin_base(reference: str, repo_digests: Iterable[str]) -> str:
    """`name:tag@sha256:…` when the engine holds a registry digest for that repository; the tag stays for readers."""
    if "@" in reference:
        return reference
    last = reference.rpartition("/")[2]
    repository = reference.rpartition(":")[0] if ":" in last else reference
    for entry in repo_digests:
        repo, _, digest = str(entry).partition("@")
        # Docker Hub names come back short (python@…) or long (docker.io/library/python@…).
        same = repo == repository or repo.endswith("/" + repository) or repository.endswith("/" + repo)
        if same and re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return f"{reference}@{digest}"
    return reference


def hashed_requirements(wheels: Path) -> list[str]:
    """`name==version --hash=sha256:…` for each distribution in the wheelhouse (all its wheels' hashes)."""
    found: dict[tuple[str, str], list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        found.setdefault((name, version), []).append(hashlib.sha256(wheel.read_bytes()).hexdigest())
    if not found:
        raise StageFailed(f"the wheelhouse {wheels} holds no wheels to install")
    return [f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes) for (name, version), hashes in sorted(found.items())]


def docker_client(timeout: int = 60) -> Any:
    """A client for DOCKER_HOST (or the default socket); a clean StageFailed naming it when unreachable."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:
        raise StageFailed("the docker package is not installed: pip install 'sluice[deploy]'") from exc
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (DOCKER_HOST is not set)"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise StageFailed(
            f"no Docker daemon reachable at DOCKER_HOST={where}",
            f'{exc}\nStart dockerd or point DOCKER_HOST at a running engine (CI: eval "$(.ci/docker-up.sh)").',
        ) from exc
    return client


def pinned_requirements(meta: Mapping[str, Any], extra: Iterable[str]) -> list[str]:
    """requirements.txt lines; each is re-checked here, as metadata.json is an input anyone could edit."""
    trained = meta.get("library_versions", {})
    lines = [f"{lib}=={trained[lib]}" for lib in MODEL_LIBRARIES if trained.get(lib)]
    for package in SERVING_PACKAGES:
        try:
            lines.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            lines.append(package)
    return [require_requirement(line, "docker.build") for line in [*lines, *extra]]


def write_context(
    context: Path,
    model_dir: Path,
    meta: Any,
    requirements: list[str],
    cfg: Mapping[str, Any],
    python: str,
    labels: Mapping[str, str],
    model_bytes: bytes | None = None,
) -> None:
    """The build context. `model_bytes`: the verified model file; without it the file is read and
    verified here against metadata.json alone."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.copytree(SERVING_DIR, context / "srv" / "app" / "serving", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (context / "srv" / "model").mkdir()
    if Path(meta.model_file).name != meta.model_file or meta.model_file in ("", ".", ".."):
        raise StageFailed(f"metadata.json names the model file {meta.model_file!r}: expected a file name inside the model directory")
    if model_bytes is None:
        from sluice.stages.serving.model import ModelError, read_verified

        try:
            meta, model_bytes = read_verified(model_dir)
        except ModelError as exc:
            raise StageFailed(str(exc)) from exc
    # metadata.json as it was read, not as it may be now; the server checks the model against the
    # digest baked into the entry point anyway.
    (context / "srv" / "model" / "metadata.json").write_text(json.dumps(meta.raw, indent=2) + "\n")
    (context / "srv" / "model" / meta.model_file).write_bytes(model_bytes)
    (context / "wheels").mkdir()
    (context / "Dockerfile").write_text(dockerfile(cfg, python, labels, hashlib.sha256(model_bytes).hexdigest()))


def dockerfile(cfg: Mapping[str, Any], python: str, labels: Mapping[str, str], model_sha256: str | None = None) -> str:
    """The Dockerfile text; every value is checked or quoted, so none can start an instruction.
    `model_sha256`: the verified digest the server in the image insists on."""
    port = int(cfg["port"])
    props = DockerBuildStage.config_schema["properties"]
    base_image = require_match(props["base_image"]["pattern"], str(cfg["base_image"]), "base_image")
    python = require_match(r"[0-9]+\.[0-9]+", python, "the model's Python version")
    key_pattern = props["labels"]["propertyNames"]["pattern"]
    label_line = " ".join(
        f"{dockerfile_string(require_match(key_pattern, k, 'label key'))}={dockerfile_string(str(v))}" for k, v in sorted(labels.items())
    )
    expect = f', "--expect-sha256", "{require_match("[0-9a-f]{64}", model_sha256, "the model digest")}"' if model_sha256 else ""
    pip_source = "--no-index --find-links /tmp/wheels --require-hashes" if cfg["wheelhouse"] else ""
    check = (
        "import sys; v = '%d.%d' % sys.version_info[:2]; "
        f"sys.exit(0 if v == '{python}' else 'base image has Python ' + v + ', the model was trained with {python}')"
    )
    health = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=2)"
    # Two stages, so the wheelhouse never reaches the final image. In the final stage the
    # model-independent instructions come first: the builder caches them across models, and on
    # copy-per-layer storage drivers (vfs) every uncached instruction costs a full filesystem copy.
    return f"""\
# Generated by sluice docker.build.
FROM {base_image} AS deps
RUN python3 -c "{check}"
COPY requirements.txt /tmp/requirements.txt
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check {pip_source} -r /tmp/requirements.txt

FROM {base_image}
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/srv/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER {APP_UID}:{APP_UID}
EXPOSE {port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["python3", "-c", "{health}"]
ENTRYPOINT ["python3", "-m", "serving", "/srv/model"{expect}]
CMD ["--host", "0.0.0.0", "--port", "{port}"]
COPY --from=deps /opt/venv /opt/venv
COPY srv /srv
LABEL {label_line}
"""


def download_wheels(wheels: Path, requirements: Path, python: str, ctx: StageContext) -> None:
    """pip download on the host, with the stage's secrets (e.g. PIP_INDEX_URL with a token) in its
    environment: the only step that needs them, and one whose output is just the wheel files."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), "--only-binary=:all:",
           "--python-version", python, "-r", str(requirements)]  # fmt: skip
    ctx.log.info("downloading wheels for Python %s on the host", python)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ctx.secrets}, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL:])
        raise StageFailed("pip download for the wheelhouse failed", tail)


def build(client: Any, context: Path, tag: str, network_mode: str | None, ctx: StageContext) -> str:
    """Streams the build log to the stage log; on failure, the log tail becomes the error details."""
    from docker.errors import APIError

    lines: list[str] = []
    image_id = ""
    try:
        stream = client.api.build(path=str(context), tag=tag, network_mode=network_mode, rm=True, forcerm=True, decode=True)
        for chunk in stream:
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        lines.append(line)
                        ctx.log.info("build: %s", line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                lines.append(chunk["error"].strip())
                raise StageFailed(f"docker build of {tag} failed: {chunk['error'].strip()}", "\n".join(lines[-LOG_TAIL:]))
    except APIError as exc:
        raise StageFailed(f"docker build of {tag} failed: {exc.explanation or exc}", "\n".join(lines[-LOG_TAIL:])) from exc
    if not image_id:
        image_id = client.images.get(tag).id
    return image_id
