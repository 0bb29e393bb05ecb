"""k8s.manifests: hardened, probed Kubernetes objects for one image, checked against the official schemas."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, write_json
from sluice.stages._safe import control_characters
from sluice.stages._tables import output_path
from sluice.stages.docker_build import APP_UID

COLOURS = ("blue", "green")
NAME_LABEL = "app.kubernetes.io/name"
VERSION_LABEL = "app.kubernetes.io/version"
COLOUR_LABEL = "sluice.dev/colour"
TRACK_LABEL = "sluice.dev/track"  # rolling: "stable" pods take traffic, "preview" pods are smoke-tested
SPEC_HASH = "sluice.dev/spec-hash"  # k8s.deploy compares it to decide whether an object changed
INDEX_FILE = "index.json"
DEFAULT_CONTAINER_PORT = 8000
PRESTOP_SECONDS = 5  # long enough for kube-proxy and ingress controllers to stop routing to a terminating pod


class ManifestsStage(Plugin):
    name = "k8s.manifests"
    version = "1"
    config_schema = schemas.load("stages/k8s.manifests")
    inputs = (Port("image", required=False, desc="the image record from docker.build (else with: image)"),)
    outputs = (Port("manifests", desc="directory of YAML objects plus index.json"),)

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        yield from control_characters(config)
        scaling = config.get("autoscaling")
        if scaling and scaling.get("min_replicas", config.get("replicas", 2)) > scaling["max_replicas"]:
            yield ConfigProblem("min_replicas is greater than max_replicas", ("autoscaling",))

    def advice(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        if config.get("namespace", "default") == "default":
            # Policies, quotas and RBAC are namespaced: in `default` the app shares them with everything else.
            yield ConfigProblem(
                "the app is rendered into the namespace 'default'; give it a namespace of its own (namespace: ...), so its"
                " NetworkPolicy, quotas and access rules apply to it alone",
                ("namespace",) if "namespace" in config else (),
            )

    def run(self, ctx: StageContext) -> None:
        cfg = self.with_defaults(ctx.config)
        image = _image_record(ctx, cfg)
        app = cfg.get("app") or _slug(ctx.pipeline)
        objects = render(app, image, cfg)
        if cfg.get("validate_against"):
            validate_objects([o for _, o in objects], cfg["validate_against"])
        out = output_path(ctx, "manifests")
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        index = []
        for (role, colour), obj in objects:
            file = f"{obj['kind'].lower()}-{role}{'-' + colour if colour else ''}.yaml"
            (out / file).write_text(yaml.safe_dump(obj, sort_keys=False))
            index.append({"file": file, "kind": obj["kind"], "name": obj["metadata"]["name"], "role": role, "colour": colour})
        write_json(
            out / INDEX_FILE, {"app": app, "namespace": cfg["namespace"], "strategy": cfg["strategy"], "image": image, "objects": index}
        )
        ctx.log.info("rendered %d objects for %s (%s)", len(index), app, cfg["strategy"])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "model"


def _image_record(ctx: StageContext, cfg: Mapping[str, Any]) -> dict[str, Any]:
    if "image" in ctx.inputs:
        record = json.loads(ctx.inputs["image"].read_text())
        if "reference" not in record:
            raise StageFailed(f"{ctx.inputs['image']} is not a docker.build image record (no 'reference')")
        return {k: record.get(k) for k in ("reference", "repo_digests", "image_id", "model_hash", "model_version", "port", "tags")}
    if cfg.get("image"):
        return {
            "reference": cfg["image"],
            "repo_digests": [],
            "image_id": None,
            "model_hash": None,
            "model_version": None,
            "port": None,
            "tags": [],
        }
    raise StageFailed("k8s.manifests needs an `image` input (from docker.build) or `with: image:`")


def _version_label(image: Mapping[str, Any]) -> str:
    tag = image["reference"].rpartition("@")[0] or image["reference"]
    candidate = image.get("model_version") or tag.rpartition(":")[2]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", str(candidate))[:63].strip("-_.") or "unknown"


def render(app: str, image: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[tuple[tuple[str, str | None], dict[str, Any]]]:
    """[((role, colour), object)]: roles are app (Deployment), live (Service), preview (Service; for
    rolling also its one-pod Deployment), scaler (HPA)."""
    base = {NAME_LABEL: app, VERSION_LABEL: _version_label(image), "app.kubernetes.io/managed-by": "sluice", **cfg["labels"]}
    if cfg["strategy"] == "rolling":
        # The candidate first runs as one preview pod behind its own Service, so the smoke test
        # never goes through the live Service; the tracks keep the two Deployments' selectors apart.
        stable, preview = {NAME_LABEL: app, TRACK_LABEL: "stable"}, {NAME_LABEL: app, TRACK_LABEL: "preview"}
        return [
            (("app", None), deployment(app, image, cfg, {**base, **stable}, stable)),
            (("budget", None), disruption_budget(app, cfg, base, stable)),
            (("live", None), service(app, cfg, base, stable)),
            (("preview", None), deployment(f"{app}-preview", image, {**cfg, "replicas": 1}, {**base, **preview}, preview)),
            (("preview", None), service(f"{app}-preview", cfg, {**base, **preview}, preview)),
            *([(("scaler", None), hpa(app, cfg, base))] if cfg.get("autoscaling") else []),
            (("policy", None), network_policy(app, image, cfg, base)),
        ]
    objects: list[tuple[tuple[str, str | None], dict[str, Any]]] = []
    for colour in COLOURS:
        labels, selector = {**base, COLOUR_LABEL: colour}, {NAME_LABEL: app, COLOUR_LABEL: colour}
        objects.append((("app", colour), deployment(f"{app}-{colour}", image, cfg, labels, selector)))
        objects.append((("budget", colour), disruption_budget(f"{app}-{colour}", cfg, labels, selector)))
        objects.append((("preview", colour), service(f"{app}-{colour}", cfg, labels, selector)))
        if cfg.get("autoscaling"):
            objects.append((("scaler", colour), hpa(f"{app}-{colour}", cfg, labels)))
    # The live Service starts on blue; k8s.deploy rewrites the selector to the colour it promotes.
    live = {k: v for k, v in base.items() if k != VERSION_LABEL}
    objects.append((("live", None), service(app, cfg, live, {NAME_LABEL: app, COLOUR_LABEL: COLOURS[0]})))
    objects.append((("policy", None), network_policy(app, image, cfg, live)))
    return objects


def _container_port(image: Mapping[str, Any], cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("container_port") or image.get("port") or DEFAULT_CONTAINER_PORT)


def image_reference(image: Mapping[str, Any]) -> str:
    """The image by digest when one is known (a pushed image's RepoDigests), else its reference."""
    reference = str(image["reference"])
    if "@" in reference:
        return reference
    repository = reference.rpartition(":")[0] if ":" in reference.rpartition("/")[2] else reference
    for digest in image.get("repo_digests") or ():
        if str(digest).partition("@")[0] == repository:
            return str(digest)
    return reference


def _meta(name: str, cfg: Mapping[str, Any], labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": cfg["namespace"], "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def deployment(
    name: str, image: Mapping[str, Any], cfg: Mapping[str, Any], labels: Mapping[str, str], selector: Mapping[str, str]
) -> dict[str, Any]:
    port = _container_port(image, cfg)
    annotations = {
        k: str(v) for k, v in (("sluice.dev/image-id", image.get("image_id")), ("sluice.dev/model-hash", image.get("model_hash"))) if v
    }

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures}

    container = {
        "name": "server",
        "image": image_reference(image),
        "imagePullPolicy": cfg["image_pull_policy"],
        "args": ["--host", "0.0.0.0", "--port", str(port)],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Loading and self-checking a model can take a while; the startup probe covers it so
        # liveness stays strict once the server is up.
        "startupProbe": probe("/health", 2, 60),
        "livenessProbe": probe("/health", 10, 3),
        "readinessProbe": probe("/ready", 5, 2),
        "resources": json.loads(json.dumps(cfg["resources"])),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        # Endpoints are removed while the pod still answers: requests already routed to it finish.
        "lifecycle": {"preStop": {"exec": {"command": ["python3", "-c", f"import time; time.sleep({PRESTOP_SECONDS})"]}}},
    }
    if cfg.get("secret_env"):
        # A reference the kubelet resolves: the manifest on disk and in the cluster names the Secret, never its value.
        container["env"] = [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": ref["secret"], "key": ref["key"], "optional": False}}}
            for name, ref in sorted(cfg["secret_env"].items())
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, cfg, labels, annotations),
        "spec": {
            "replicas": int(cfg["replicas"]),
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": dict(selector)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": PRESTOP_SECONDS + 25,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    # The app's pods (any colour or track) on different nodes where the cluster has them, so one
                    # node lost is not the service lost; one term for every template keeps their hashes comparable.
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": {NAME_LABEL: selector[NAME_LABEL]}},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def service(name: str, cfg: Mapping[str, Any], labels: Mapping[str, str], selector: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, cfg, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": int(cfg["service_port"]), "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(name: str, cfg: Mapping[str, Any], labels: Mapping[str, str], selector: Mapping[str, str]) -> dict[str, Any]:
    """A node drain takes at most one of the Deployment's pods at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, cfg, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }


def network_policy(app: str, image: Mapping[str, Any], cfg: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """The app's pods take connections on the serving port only and open none: a model server calls nothing."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(app, cfg, labels),
        "spec": {
            "podSelector": {"matchLabels": {NAME_LABEL: app}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": _container_port(image, cfg)}]}],
            "egress": [],
        },
    }


def hpa(name: str, cfg: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    scaling = cfg["autoscaling"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, cfg, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": int(scaling.get("min_replicas", cfg["replicas"])),
            "maxReplicas": int(scaling["max_replicas"]),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": int(scaling.get("cpu_utilization", 70))},
                    },
                }
            ],
        },
    }


def validate_objects(objects: Iterable[Mapping[str, Any]], version: str) -> None:
    """Checks each object against the official OpenAPI-derived schemas of that Kubernetes version."""
    try:
        import kubernetes_validate
    except ImportError:
        raise StageFailed("validate_against is set but kubernetes-validate is not installed (pip install kubernetes-validate)") from None
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.utils.VersionNotSupportedError:
            raise StageFailed(f"kubernetes-validate has no schemas for Kubernetes {version}") from None
    if errors:
        raise StageFailed(f"{len(errors)} rendered manifest(s) fail the Kubernetes {version} schemas", "\n".join(errors))
