"""A thin layer over the kubernetes client for k8s.deploy: connect, apply-if-changed, wait, proxy.

Objects stay plain dicts (as rendered by k8s.manifests); the kubernetes package is imported only
when a Kube is built, so `sluice validate` never pays for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluice.engine.plugin import StageFailed

SPEC_HASH = "sluice.dev/spec-hash"
REVISION = "deployment.kubernetes.io/revision"
TRANSIENT = frozenset({429, 500, 502, 503, 504})  # worth another try: the server may answer next time
ATTEMPTS = 3
BACKOFF = 0.2  # seconds before the second attempt, doubled for each one after


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Hash of the object as rendered (before our own annotation): equal hash, nothing to apply."""
    clean = json.loads(json.dumps(obj))
    clean["metadata"].get("annotations", {}).pop(SPEC_HASH, None)
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Kube:
    api_client: Any
    timeout: float

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, timeout: float) -> Kube:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            if kubeconfig or context or _has_kubeconfig():
                api = config.new_client_from_config(config_file=kubeconfig, context=context)
            else:
                config.load_incluster_config()
                api = client.ApiClient()
        except (ConfigException, OSError, TypeError) as exc:
            raise StageFailed(f"cannot load Kubernetes configuration ({kubeconfig or '$KUBECONFIG or ~/.kube/config'}): {exc}") from exc
        api.configuration.retries = 1  # an unreachable cluster should fail in seconds, not minutes
        kube = cls(api, timeout)
        kube.call(client.VersionApi(api).get_code)
        return kube

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs one API call, retrying transient answers (bounded, with backoff); connection
        failures become a StageFailed naming the server. Writes are retried only because every
        write here carries a resourceVersion or is a create: a repeat cannot apply twice."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn(*args, _request_timeout=self.timeout, **kwargs)
            except ApiException as exc:
                if exc.status not in TRANSIENT:
                    raise
                if attempt == ATTEMPTS:
                    exc.reason = f"{exc.reason} (after {ATTEMPTS} attempts)"
                    raise
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            except (HTTPError, OSError) as exc:
                raise StageFailed(f"cannot reach the Kubernetes API server at {self.host}: {_root_cause(exc)}") from exc
        raise AssertionError("unreachable")

    def _api(self, kind: str) -> tuple[Any, str]:
        from kubernetes import client

        table = {
            "Deployment": (client.AppsV1Api, "namespaced_deployment"),
            "Service": (client.CoreV1Api, "namespaced_service"),
            "HorizontalPodAutoscaler": (client.AutoscalingV2Api, "namespaced_horizontal_pod_autoscaler"),
            "Lease": (client.CoordinationV1Api, "namespaced_lease"),
            "PodDisruptionBudget": (client.PolicyV1Api, "namespaced_pod_disruption_budget"),
            "NetworkPolicy": (client.NetworkingV1Api, "namespaced_network_policy"),
        }
        api_cls, suffix = table[kind]
        return api_cls(self.api_client), suffix

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        api, suffix = self._api(kind)
        try:
            obj = self.call(getattr(api, f"read_{suffix}"), name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise StageFailed(f"reading {kind} {namespace}/{name} failed: {exc.status} {exc.reason}", str(exc.body)[:2000]) from exc
        return dict(self.api_client.sanitize_for_serialization(obj))

    def apply(self, obj: Mapping[str, Any], keep_replicas: bool = False) -> str:
        """Creates or replaces `obj` unless the cluster already has it as rendered; returns what it did.
        keep_replicas: an HPA owns the Deployment's scale, so a replace keeps the cluster's count."""
        from kubernetes.client.exceptions import ApiException

        desired = json.loads(json.dumps(obj))
        kind, meta = desired["kind"], desired["metadata"]
        meta.setdefault("annotations", {})[SPEC_HASH] = spec_hash(obj)
        api, suffix = self._api(kind)
        current = self.read(kind, meta["namespace"], meta["name"])
        try:
            if current is None:
                try:
                    self.call(getattr(api, f"create_{suffix}"), meta["namespace"], desired)
                except ApiException as exc:
                    # A create whose answer was lost and that the client repeated: read back what exists.
                    again = self.read(kind, meta["namespace"], meta["name"]) if exc.status == 409 else None
                    if not again or again["metadata"].get("annotations", {}).get(SPEC_HASH) != meta["annotations"][SPEC_HASH]:
                        raise
                return "created"
            if current["metadata"].get("annotations", {}).get(SPEC_HASH) == meta["annotations"][SPEC_HASH]:
                return "unchanged"
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            if keep_replicas and "replicas" in current.get("spec", {}):
                desired["spec"]["replicas"] = current["spec"]["replicas"]
            if kind == "Service":  # clusterIP is immutable and assigned by the cluster
                for key in ("clusterIP", "clusterIPs"):
                    if key in current["spec"]:
                        desired["spec"][key] = current["spec"][key]
            self.call(getattr(api, f"replace_{suffix}"), meta["name"], meta["namespace"], desired)
            return "updated"
        except ApiException as exc:
            raise StageFailed(
                f"applying {kind} {meta['namespace']}/{meta['name']} failed: {exc.status} {exc.reason}", str(exc.body)[:2000]
            ) from exc

    def replace(self, obj: Mapping[str, Any]) -> None:
        """Writes back an object read from the cluster (read-modify-write; resourceVersion guards races)."""
        self._write("replace", obj, obj["metadata"]["name"], obj["metadata"]["namespace"])

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Deletes an object; one that is already gone is fine."""
        from kubernetes.client.exceptions import ApiException

        api, suffix = self._api(kind)
        try:
            self.call(getattr(api, f"delete_{suffix}"), name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise StageFailed(f"deleting {kind} {namespace}/{name} failed: {exc.status} {exc.reason}", str(exc.body)[:2000]) from exc

    def create(self, obj: Mapping[str, Any]) -> None:
        self._write("create", obj, obj["metadata"]["namespace"])

    def _write(self, verb: str, obj: Mapping[str, Any], *args: str) -> None:
        from kubernetes.client.exceptions import ApiException

        api, suffix = self._api(obj["kind"])
        body = {k: v for k, v in obj.items() if k != "status"}
        try:
            self.call(getattr(api, f"{verb}_{suffix}"), *args, body)
        except ApiException as exc:
            error = Conflict if exc.status == 409 else StageFailed
            raise error(
                f"{'updating' if verb == 'replace' else 'creating'} {obj['kind']} {obj['metadata']['name']} "
                f"failed: {exc.status} {exc.reason}",
                str(exc.body)[:2000],
            ) from exc

    def wait_ready(self, namespace: str, name: str, timeout: float, poll: float) -> dict[str, Any]:
        """Waits as `kubectl rollout status` does; raises StageFailed with the last status on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            dep = self.read("Deployment", namespace, name)
            if dep is None:
                raise StageFailed(f"Deployment {namespace}/{name} disappeared during the rollout")
            if rollout_done(dep):
                return dep
            if time.monotonic() >= deadline:
                raise RolloutTimeout(f"Deployment {namespace}/{name} was not ready within {timeout:g} s", describe(dep))
            time.sleep(poll)

    def proxy_client(self, namespace: str, service: str, port: int) -> Any:
        """An httpx client whose base URL is the Service, reached through the API server proxy."""
        import httpx

        cfg = self.api_client.configuration
        headers = {}
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["authorization"] = token
        verify: Any = (cfg.ssl_ca_cert or True) if cfg.verify_ssl else False
        cert = (cfg.cert_file, cfg.key_file) if cfg.cert_file else None
        base = f"{self.host}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"
        return httpx.Client(base_url=base, headers=headers, verify=verify, cert=cert, timeout=self.timeout)


class RolloutTimeout(StageFailed):
    pass


class Conflict(StageFailed):
    """409: someone else wrote the object since we read it (or created it first)."""


@dataclass
class Lease:
    """A coordination.k8s.io/v1 Lease held for one deploy: taken before any write, renewed while
    held, released after. A holder that stopped renewing for `duration` seconds may be taken over."""

    kube: Kube
    namespace: str
    name: str
    duration: int
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}")
    took_over_from: str | None = None
    lost: str | None = None  # why the lease is no longer ours, once the renewer finds out
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Lease:
        self._acquire()
        threading.Thread(target=self._renew_loop, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            current = self.kube.read("Lease", self.namespace, self.name)
            if current and (current.get("spec") or {}).get("holderIdentity") == self.holder:
                current["spec"] = {**current["spec"], "holderIdentity": None, "leaseDurationSeconds": self.duration}
                self.kube.replace(current)
        except StageFailed:
            pass  # an unreleased lease expires by itself after `duration` seconds

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def check(self) -> None:
        """Raises unless the lease is still ours: call it before each write that moves traffic.
        Reads the Lease itself, since the renewer only looks every third of the duration."""
        if not self.lost:
            try:
                holder = ((self.kube.read("Lease", self.namespace, self.name) or {}).get("spec") or {}).get("holderIdentity")
            except StageFailed as exc:
                holder, self.lost = self.holder, f"it could not be read back ({exc})"
            if holder != self.holder:
                self.lost = f"it is now held by {holder}"
        if self.lost:
            raise StageFailed(f"lost the deploy lease {self.where}: {self.lost}; stopped before switching traffic")

    def _spec(self) -> dict[str, Any]:
        now = _micro_time(datetime.now(UTC))
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration, "acquireTime": now, "renewTime": now}

    def _acquire(self) -> None:
        current = self.kube.read("Lease", self.namespace, self.name)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(),
        }
        try:
            if current is None:
                self.kube.create(body)
                return
            spec = current.get("spec") or {}
            other = spec.get("holderIdentity")
            if other and other != self.holder:
                left = _expires_in(spec)
                if left > 0:
                    raise StageFailed(
                        f"another deploy holds the lease {self.where}: {other}, renewed at {spec.get('renewTime')}, "
                        f"expires in {left:.0f} s unless renewed; nothing was changed, try again when it has finished"
                    )
                self.took_over_from = f"{other} (renewed at {spec.get('renewTime')}, expired)"
            current["spec"] = body["spec"]
            self.kube.replace(current)
        except Conflict:
            winner = ((self.kube.read("Lease", self.namespace, self.name) or {}).get("spec") or {}).get("holderIdentity")
            raise StageFailed(f"another deploy took the lease {self.where} first ({winner}); nothing was changed") from None

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(self.duration / 3, 0.05)):
            spec: Mapping[str, Any] = {}
            try:
                current = self.kube.read("Lease", self.namespace, self.name)
                spec = (current or {}).get("spec") or {}
                if spec.get("holderIdentity") != self.holder:
                    self.lost = f"it is now held by {spec.get('holderIdentity')}"
                    return
                assert current is not None
                current["spec"] = {**spec, "renewTime": _micro_time(datetime.now(UTC))}
                self.kube.replace(current)
            except Conflict:
                continue  # re-read on the next beat: a conflict alone does not mean we lost it
            except StageFailed as exc:
                if _expires_in(spec) <= 0:
                    self.lost = f"could not renew it in time ({exc})"
                    return


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expires_in(spec: Mapping[str, Any]) -> float:
    """Seconds until a lease held with `spec` expires; <= 0 once it has (clocks assumed roughly in sync)."""
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return 0.0
    moment = datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() + float(spec.get("leaseDurationSeconds") or 0) - time.time()


def rollout_done(dep: Mapping[str, Any]) -> bool:
    spec, status = dep.get("spec", {}), dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    return (
        int(status.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) == want
        and int(status.get("readyReplicas") or 0) == want
        and int(status.get("availableReplicas") or 0) == want
        and int(status.get("replicas") or 0) == want  # old pods gone
    )


def describe(dep: Mapping[str, Any]) -> str:
    status = dep.get("status") or {}
    lines = [f"replicas wanted {dep.get('spec', {}).get('replicas')}: " + ", ".join(
        f"{k}={status.get(k, 0)}" for k in ("updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"))]  # fmt: skip
    lines += [
        f"condition {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".rstrip(": ")
        for c in status.get("conditions") or []
    ]
    return "\n".join(lines)


def _has_kubeconfig() -> bool:
    import os

    return bool(os.environ.get("KUBECONFIG")) or (Path.home() / ".kube" / "config").is_file()


def _root_cause(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
