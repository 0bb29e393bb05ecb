"""FAKE Kubernetes API server for tests: NOT Kubernetes, only the endpoints k8s.deploy uses.

No cluster can run on the CI machines, so this in-process HTTP server on 127.0.0.1 stands in for
one. It implements, for Deployments, Services, HorizontalPodAutoscalers and coordination.k8s.io
Leases: get, create, replace (with resourceVersion conflicts) and delete; `GET /version`; and the
Service proxy (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH`) used for smoke tests.

Faults can be injected (`inject`): a status answered instead of doing the request (a transient
500), or a response lost after the write committed (the connection drops). `before` hooks let a
test act as a concurrent actor at an exact point of another's request sequence.

There are no pods. What a Deployment's pods would do is decided per image by `ImageBehaviour`:
how long until they are ready, whether they ever are, and which real HTTP server answers for
them behind the Service proxy (tests point that at a real uvicorn serving app). Deployment
status moves the way a controller moves it: observedGeneration lags a moment after an update,
then updatedReplicas, then readyReplicas/availableReplicas once the image's pods are ready; old
pods keep serving until then, as with maxUnavailable: 0. Pods carry the labels of the template
they were made from, so a Service selecting a template's hash label reaches only those pods.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

CONTROLLER_LAG = 0.05  # seconds before the fake controller "observes" a new generation

ROUTES = {
    "deployments": re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments(?:/(?P<name>[^/]+))?$"),
    "services": re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services(?:/(?P<name>[^/:]+))?$"),
    "horizontalpodautoscalers": re.compile(
        r"^/apis/autoscaling/v2/namespaces/(?P<ns>[^/]+)/horizontalpodautoscalers(?:/(?P<name>[^/]+))?$"
    ),
    "leases": re.compile(r"^/apis/coordination.k8s.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?$"),
    "poddisruptionbudgets": re.compile(r"^/apis/policy/v1/namespaces/(?P<ns>[^/]+)/poddisruptionbudgets(?:/(?P<name>[^/]+))?$"),
    "networkpolicies": re.compile(r"^/apis/networking.k8s.io/v1/namespaces/(?P<ns>[^/]+)/networkpolicies(?:/(?P<name>[^/]+))?$"),
}
PROXY = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<name>[^/:]+)(?::(?P<port>[^/]+))?/proxy(?P<path>/.*)?$")
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake", "gitCommit": "0" * 40, "gitTreeState": "clean",
           "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2", "compiler": "gc", "platform": "linux/amd64"}  # fmt: skip
KINDS = {"deployments": ("apps/v1", "Deployment"), "services": ("v1", "Service"),
         "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscaler"),
         "leases": ("coordination.k8s.io/v1", "Lease"), "poddisruptionbudgets": ("policy/v1", "PodDisruptionBudget"),
         "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy")}  # fmt: skip
DROP = -1  # a fault's status meaning: do the request, then close the connection without answering


@dataclass
class Fault:
    """One injected failure: requests matching `method` and the `path` regex, `times` times."""

    method: str
    path: str
    status: int  # answered instead of doing the request; DROP: done, then the answer is lost
    times: int = 1


@dataclass
class ImageBehaviour:
    """What the pods of one image do. `backend`: base URL of a real server answering for them."""

    ready_after: float = 0.2  # seconds after a rollout starts until its pods are ready
    never_ready: bool = False  # readiness probe never passes (crash loop, bad model, ...)
    backend: str | None = None


@dataclass
class _Rollout:
    image: str
    started: float
    labels: dict[str, str]  # the pod template's labels: what its pods carry
    previous: _Rollout | None  # the pods that serve until these are ready (maxUnavailable: 0)


@dataclass
class FakeKubernetesAPI:
    images: dict[str, ImageBehaviour] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path), for assertions
    faults: list[Fault] = field(default_factory=list)
    before: list[Callable[[str, str], None]] = field(default_factory=list)  # hooks(method, path), run before each request
    _rollouts: dict[tuple[str, str], _Rollout] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _server: ThreadingHTTPServer | None = None
    _version: int = 100

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    # -- inspection helpers for tests -----------------------------------------------------
    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((plural, ns, name))
            return self._with_status(plural, ns, obj) if obj else None

    def inject(self, method: str, path: str, status: int, times: int = 1) -> None:
        self.faults.append(Fault(method, path, status, times))

    def set_replicas(self, ns: str, name: str, replicas: int) -> None:
        """What an HPA does: scale a Deployment without touching its template."""
        with self._lock:
            dep = self.objects[("deployments", ns, name)]
            dep["spec"]["replicas"] = replicas
            dep["metadata"]["resourceVersion"] = self._next_version()

    def refill(self, ns: str, name: str, image: str, labels: dict[str, str]) -> None:
        """Another deployer's write: a new image and template labels on Deployment `name`."""
        with self._lock:
            key = ("deployments", ns, name)
            old = copy.deepcopy(self.objects[key])
            self.objects[key]["spec"]["template"]["spec"]["containers"][0]["image"] = image
            self.objects[key]["spec"]["template"]["metadata"]["labels"].update(labels)
            self.objects[key]["metadata"]["generation"] += 1
            self._on_change("deployments", ns, self.objects[key], old)

    def serving_labels(self, ns: str, name: str) -> dict[str, str] | None:
        """The template labels of the pods of Deployment `name` that answer now."""
        with self._lock:
            rollout = self._serving(self._rollouts[(ns, name)])
            return dict(rollout.labels) if rollout else None

    # -- the API --------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any] | bytes, str]:
        self.requests.append((method, path))
        for hook in list(self.before):
            hook(method, path)
        with self._lock:
            fault = next((f for f in self.faults if f.times > 0 and f.method == method and re.search(f.path, path)), None)
            if fault:
                fault.times -= 1
        if fault and fault.status != DROP:
            return fault.status, _status(fault.status, "InternalError", "injected fault"), "application/json"
        answer = self._handle(method, path, body, headers)
        return (DROP, b"", "") if fault else answer

    def _handle(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any] | bytes, str]:
        if headers.get("authorization") != "Bearer fake-token":
            return 401, _status(401, "Unauthorized", "missing or wrong bearer token"), "application/json"
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/version":
            return 200, VERSION, "application/json"
        proxy = PROXY.match(path)
        if proxy:
            return self._proxy(method, proxy["ns"], proxy["name"], proxy["path"] or "/", body)
        for plural, pattern in ROUTES.items():
            match = pattern.match(path)
            if match:
                with self._lock:
                    return (*self._crud(method, plural, match["ns"], match["name"], body), "application/json")
        return 404, _status(404, "NotFound", f"the fake API server does not implement {method} {path}"), "application/json"

    def _crud(self, method: str, plural: str, ns: str, name: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        key = (plural, ns, name or "")
        if method == "POST" and name is None:
            obj = json.loads(body)
            key = (plural, ns, obj["metadata"]["name"])
            if key in self.objects:
                return 409, _status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
            obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self._next_version(), generation=1,
                                   creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # fmt: skip
            if plural == "services":
                obj["spec"].setdefault("clusterIP", f"10.96.0.{len(self.objects) % 250 + 1}")
            self.objects[key] = obj
            self._on_change(plural, ns, obj, None)
            return 201, self._with_status(plural, ns, obj)
        if name is None:
            return 405, _status(405, "MethodNotAllowed", "list is not implemented by the fake")
        current = self.objects.get(key)
        if current is None:
            return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, self._with_status(plural, ns, current)
        if method == "DELETE":
            del self.objects[key]
            self._rollouts.pop((ns, name), None)
            return 200, _status(200, "Success", "deleted")
        if method == "PUT":
            obj = json.loads(body)
            if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", "the object has been modified; please apply your changes to the latest version")
            if plural == "services" and obj["spec"].get("clusterIP") not in (None, current["spec"].get("clusterIP")):
                return 422, _status(422, "Invalid", "spec.clusterIP: Invalid value: field is immutable")
            meta = current["metadata"]
            changed = obj.get("spec") != current.get("spec")
            obj["metadata"].update(namespace=ns, uid=meta["uid"], creationTimestamp=meta["creationTimestamp"],
                                   resourceVersion=self._next_version(), generation=meta["generation"] + (1 if changed else 0))  # fmt: skip
            obj.pop("status", None)
            if plural == "services":
                obj["spec"].setdefault("clusterIP", current["spec"].get("clusterIP"))
            self.objects[key] = obj
            self._on_change(plural, ns, obj, current)
            return 200, self._with_status(plural, ns, obj)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not implemented by the fake")

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _on_change(self, plural: str, ns: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if plural != "deployments":
            return
        image = _image_of(obj)
        name = obj["metadata"]["name"]
        old_template = old["spec"]["template"] if old else None
        annotations = obj["metadata"].setdefault("annotations", {})
        revision = int((old or {}).get("metadata", {}).get("annotations", {}).get("deployment.kubernetes.io/revision", "0"))
        if old_template != obj["spec"]["template"]:
            serving = self._serving(self._rollouts.get((ns, name)))
            labels = dict(obj["spec"]["template"]["metadata"].get("labels") or {})
            self._rollouts[(ns, name)] = _Rollout(image, time.monotonic(), labels, serving)
            revision += 1
        annotations["deployment.kubernetes.io/revision"] = str(max(revision, 1))

    def _serving(self, rollout: _Rollout | None) -> _Rollout | None:
        """The rollout whose pods answer now: this one once ready, else the one before it."""
        if rollout is None:
            return None
        behaviour = self.images.get(rollout.image, ImageBehaviour())
        done = not behaviour.never_ready and time.monotonic() - rollout.started >= behaviour.ready_after
        return rollout if done else rollout.previous

    def _with_status(self, plural: str, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        if plural != "deployments":
            return out
        rollout = self._rollouts[(ns, obj["metadata"]["name"])]
        want = int(obj["spec"].get("replicas", 1))
        generation = obj["metadata"]["generation"]
        elapsed = time.monotonic() - rollout.started
        serving = self._serving(rollout)
        new_ready = serving is rollout
        old_ready = want if (serving and not new_ready) else 0
        status: dict[str, Any] = {"observedGeneration": generation - 1 if elapsed < CONTROLLER_LAG else generation}
        if elapsed >= CONTROLLER_LAG:
            ready = want if new_ready else old_ready
            status.update(
                replicas=want if new_ready else want + old_ready,
                updatedReplicas=want,
                readyReplicas=ready,
                availableReplicas=ready,
                unavailableReplicas=0 if new_ready else want,
                conditions=[
                    {
                        "type": "Available",
                        "status": "True" if ready >= want else "False",
                        "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
                    },
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" if new_ready else "ReplicaSetUpdated"},
                ],
            )
        out["status"] = status
        return out

    def _proxy(self, method: str, ns: str, name: str, path: str, body: bytes) -> tuple[int, dict[str, Any] | bytes, str]:
        with self._lock:
            service = self.objects.get(("services", ns, name))
            if service is None:
                return 404, _status(404, "NotFound", f'services "{name}" not found'), "application/json"
            selector = service["spec"].get("selector") or {}
            backends = []
            for (plural, dep_ns, dep_name), _dep in self.objects.items():
                serving = self._serving(self._rollouts[(ns, dep_name)]) if plural == "deployments" and dep_ns == ns else None
                if serving and selector and all(serving.labels.get(k) == v for k, v in selector.items()):
                    backends.append(self.images.get(serving.image, ImageBehaviour()).backend)
        if not backends or not backends[0]:
            return 503, _status(503, "ServiceUnavailable", f'no endpoints available for service "{name}"'), "application/json"
        response = httpx.request(method, backends[0] + path, content=body or None, headers={"content-type": "application/json"}, timeout=30)
        return response.status_code, response.content, response.headers.get("content-type", "application/json")


def _image_of(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" if code < 400 else "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubernetesAPI
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        code, payload, content_type = self.fake.handle(self.command, self.path, body, headers)
        if code == DROP:  # the request was done; the client never hears about it
            self.close_connection = True
            return
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass
