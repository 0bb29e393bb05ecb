"""k8s.deploy: rolls a model image out to Kubernetes so that a bad model never replaces a good one.

Blue-green: deploy the idle colour, wait until it is ready, smoke-test it through its preview
Service, then point the live Service at it; the previous colour keeps running for rollback.
Rolling: run the candidate as one preview pod behind its preview Service, smoke-test it there,
and only then update the live Deployment in place (its replicas left to an HPA if one exists);
if that never gets ready, put the previous pod template back. Either way the record output says
what is live, what it replaced, the image ID and the gate result.

Every pod template carries a hash label; each release that passes its smoke test is remembered
(image and template hash) in the stage's state, and `rollback` returns only to such a release.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, write_json
from sluice.stages._tables import input_path, output_path

COLOURS = ("blue", "green")
COLOUR_LABEL = "sluice.dev/colour"
HISTORY_FILE = "history.jsonl"
RELEASES_FILE = "releases.json"  # every release that passed its smoke test, oldest first
KEEP_RELEASES = 20
TEMPLATE_HASH = "sluice.dev/pod-template-hash"  # as Argo Rollouts' rollouts-pod-template-hash
TRACK_LABEL = "sluice.dev/track"  # rolling's stable and preview pods: left out of the template hash


class DeployStage(Plugin):
    name = "k8s.deploy"
    version = "1"
    config_schema = schemas.load("stages/k8s.deploy")
    inputs = (
        Port("manifests", desc="the directory from k8s.manifests"),
        Port("smoke_cases", required=False, desc="a serve.smoke report whose rows are replayed"),
        Port("gate", required=False, desc="a model.gate report; deploys only on a pass"),
    )
    outputs = (Port("record", desc="JSON record of what is live"),)
    always_run = True

    def preflight(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            yield ConfigProblem("the kubernetes package is not installed: pip install 'sluice[deploy]'")

    def run(self, ctx: StageContext) -> None:
        from sluice.stages._kube import Kube

        cfg = _config(ctx.config)
        bundle = _Bundle.read(input_path(ctx, "manifests"))
        if cfg.get("strategy") and cfg["strategy"] != bundle.strategy:
            raise StageFailed(f"k8s.deploy asks for {cfg['strategy']} but k8s.manifests rendered {bundle.strategy}")
        gate = _gate_link(ctx, bundle.image)
        kube = Kube.connect(cfg.get("kubeconfig"), cfg.get("context"), float(cfg["request_timeout"]))
        deploy = _blue_green if bundle.strategy == "blue-green" else _rolling
        with _lease(kube, bundle.namespace, bundle.app, cfg) as lease:
            record = deploy(kube, bundle, cfg, ctx, lease)
        record.update(
            gate=gate,
            image=bundle.image,
            cluster=kube.host,
            namespace=bundle.namespace,
            app=bundle.app,
            strategy=bundle.strategy,
            deployed_at=_now(),
            lease={"name": lease.where, "holder": lease.holder, "took_over_from": lease.took_over_from},
        )
        write_json(output_path(ctx, "record"), record)
        _append_history(ctx, {"action": "deploy", **record})
        ctx.log.info("%s", record["summary"])

    def rollback(self, ctx: StageContext) -> str:
        from sluice.stages._kube import Kube

        cfg = _config(ctx.config)
        path = ctx.outputs.get("record")
        if path is None or not path.is_file():
            raise StageFailed("no deploy record: k8s.deploy has not completed a deploy yet, so there is nothing to roll back")
        record = json.loads(path.read_text())
        kube = Kube.connect(cfg.get("kubeconfig"), cfg.get("context"), float(cfg["request_timeout"]))
        with _lease(kube, record["namespace"], record["app"], cfg) as lease:
            if record["strategy"] == "blue-green":
                record, summary = _rollback_blue_green(kube, record, cfg, ctx, lease)
            else:
                record, summary = _rollback_rolling(kube, record, cfg, ctx, lease)
        record.update(summary=summary, rolled_back_at=_now())
        write_json(path, record)
        _append_history(ctx, {"action": "rollback", **record})
        return summary


def _lease(kube: Any, namespace: str, app: str, cfg: Mapping[str, Any]) -> Any:
    """The cluster-side lock: one deploy or rollback of `app` at a time, whoever runs it."""
    from sluice.stages._kube import Lease

    return Lease(kube, namespace, f"{app}-deploy", int(cfg["lease_duration"]))


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    props = DeployStage.config_schema["properties"]
    cfg = {k: v["default"] for k, v in props.items() if "default" in v}
    smoke = {k: v["default"] for k, v in props["smoke"]["properties"].items()}
    return {**cfg, **config, "smoke": {**smoke, **config.get("smoke", {})}}


class _Bundle:
    """The k8s.manifests output: index.json plus one YAML file per object."""

    def __init__(self, index: Mapping[str, Any], objects: list[tuple[Mapping[str, Any], dict[str, Any]]]):
        self.app: str = index["app"]
        self.namespace: str = index["namespace"]
        self.strategy: str = index["strategy"]
        self.image: dict[str, Any] = dict(index["image"])
        # Each pod template is labelled with its own hash: the handle releases are remembered by,
        # and what preview and live Services select, so traffic reaches only the tested template.
        self.objects = [(entry, label_template(obj) if obj["kind"] == "Deployment" else obj) for entry, obj in objects]
        for entry, obj in self.objects:
            if entry["role"] == "preview" and obj["kind"] == "Service":
                obj["spec"]["selector"][TEMPLATE_HASH] = _template_hash(self.one("Deployment", "app", entry["colour"]))

    @classmethod
    def read(cls, directory: Path) -> _Bundle:
        import yaml

        index_file = directory / "index.json"
        if not index_file.is_file():
            raise StageFailed(f"{directory} is not a k8s.manifests output: index.json is missing")
        index = json.loads(index_file.read_text())
        return cls(index, [(entry, yaml.safe_load((directory / entry["file"]).read_text())) for entry in index["objects"]])

    def pick(self, role: str, colour: str | None = None) -> list[dict[str, Any]]:
        return [obj for entry, obj in self.objects if entry["role"] == role and entry["colour"] == colour]

    def one(self, kind: str, role: str, colour: str | None = None) -> dict[str, Any]:
        return next(obj for obj in self.pick(role, colour) if obj["kind"] == kind)


def _blue_green(kube: Any, bundle: _Bundle, cfg: Mapping[str, Any], ctx: StageContext, lease: Any) -> dict[str, Any]:
    from sluice.stages._kube import SPEC_HASH, spec_hash

    ns, app = bundle.namespace, bundle.app
    live_service = kube.read("Service", ns, app)
    live = (live_service or {}).get("spec", {}).get("selector", {}).get(COLOUR_LABEL)
    if live in COLOURS:
        # Desired state already live? Then there is nothing to switch, only to confirm.
        current = kube.read("Deployment", ns, f"{app}-{live}")
        desired = bundle.one("Deployment", "app", live)
        selects = (live_service or {})["spec"]["selector"].get(TEMPLATE_HASH) == _template_hash(desired)
        if current and selects and current["metadata"].get("annotations", {}).get(SPEC_HASH) == spec_hash(desired):
            kube.wait_ready(ns, f"{app}-{live}", float(cfg["rollout_timeout"]), float(cfg["poll_interval"]))
            previous = _other(live)
            return {
                "live_colour": live,
                "previous_colour": previous if kube.read("Deployment", ns, f"{app}-{previous}") else None,
                "changed": {},
                "revision": _revision(current),
                "summary": f"{app}-{live} already serves this image; nothing to do",
            }
    idle = _other(live) if live in COLOURS else COLOURS[0]
    previous_image = _image_of(kube.read("Deployment", ns, f"{app}-{live}")) if live in COLOURS else None
    candidate = bundle.one("Deployment", "app", idle)
    guards = [*bundle.pick("budget", idle), *bundle.pick("policy")]
    changed = _apply(kube, bundle, [*bundle.pick("app", idle), *bundle.pick("preview", idle), *bundle.pick("scaler", idle), *guards], idle)
    keeps = f"traffic stays on {app}-{live}" if live in COLOURS else "no traffic was switched (first deploy)"
    try:
        dep = kube.wait_ready(ns, f"{app}-{idle}", float(cfg["rollout_timeout"]), float(cfg["poll_interval"]))
    except StageFailed as exc:
        raise StageFailed(f"rollout of {app}-{idle} failed: {exc}; {keeps}", exc.details) from exc
    preview = bundle.one("Service", "preview", idle)
    smoke = _smoke(kube, ns, preview, cfg, ctx)
    if not smoke["passed"]:
        raise StageFailed(
            f"smoke test against {app}-{idle} failed: {'; '.join(smoke['failures'])}; {keeps}",
            json.dumps(smoke.get("mismatches", []))[:2000],
        )
    lease.check()
    changed[f"Service/{app}"] = _switch(kube, bundle, idle, _template_hash(candidate), live_service)
    release = _remember(ctx, _release(candidate, bundle.image, idle))
    return {
        "release": release,
        "live_colour": idle,
        "previous_colour": live if live in COLOURS else None,
        "previous_image": previous_image,
        "revision": _revision(dep),
        "changed": changed,
        "smoke": {k: v for k, v in smoke.items() if k != "cases"},
        "summary": f"{app}-{idle} is live" + (f"; {app}-{live} kept for rollback" if live in COLOURS else ""),
    }


def _switch(kube: Any, bundle: _Bundle, colour: str, template: str | None, live_service: dict[str, Any] | None) -> str:
    """Points the live Service at one colour's exact pod template (colour and template hash)."""
    selector = {COLOUR_LABEL: colour, TEMPLATE_HASH: template}
    if live_service is None:
        service = json.loads(json.dumps(bundle.one("Service", "live")))
        service["spec"]["selector"].update(selector)
        return str(kube.apply(service))
    return _select(kube, live_service, selector)


def _select(kube: Any, service: dict[str, Any], selector: Mapping[str, Any]) -> str:
    """Points a Service at `selector` and reads it back: what the cluster says is what is recorded,
    also when the answer to the write was lost."""
    ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
    service["spec"]["selector"].update(selector)
    error: StageFailed | None = None
    try:
        kube.replace(service)
    except StageFailed as exc:
        error = exc
    got = ((kube.read("Service", ns, name) or {}).get("spec") or {}).get("selector") or {}
    if all(got.get(k) == v for k, v in selector.items()):
        return f"switched (confirmed by read back after: {error})" if error else "switched"
    if error:
        raise StageFailed(f"switching Service {ns}/{name} failed and it still selects {got}: {error}", error.details) from error
    raise StageFailed(f"Service {ns}/{name} was switched but reads back selecting {got}: something else changed it")


def _apply(kube: Any, bundle: _Bundle, objects: list[dict[str, Any]], colour: str | None = None) -> dict[str, str]:
    """Applies objects in order; a Deployment an HPA scales keeps the cluster's replica count."""
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in bundle.pick("scaler", colour)}
    return {f"{o['kind']}/{o['metadata']['name']}": kube.apply(o, keep_replicas=o["metadata"]["name"] in scaled) for o in objects}


def _rolling(kube: Any, bundle: _Bundle, cfg: Mapping[str, Any], ctx: StageContext, lease: Any) -> dict[str, Any]:
    from sluice.stages._kube import SPEC_HASH, spec_hash

    ns, app = bundle.namespace, bundle.app
    wait = float(cfg["rollout_timeout"]), float(cfg["poll_interval"])
    before = kube.read("Deployment", ns, app)
    desired = bundle.one("Deployment", "app")
    if (
        before
        and _template_hash(before) == _template_hash(desired)
        and (before["metadata"].get("annotations") or {}).get(SPEC_HASH) == spec_hash(desired)
    ):
        changed = _apply(kube, bundle, [*bundle.pick("live"), *bundle.pick("scaler"), *bundle.pick("budget"), *bundle.pick("policy")])
        dep = kube.wait_ready(ns, app, *wait)
        return {"revision": _revision(dep), "changed": changed, "summary": f"{app} already runs this image; nothing to do"}
    keeps = f"traffic stays on {app} revision {_revision(before)} ({_image_of(before)})" if before else "nothing was live (first deploy)"
    changed = _apply(kube, bundle, bundle.pick("preview"))
    try:
        try:
            kube.wait_ready(ns, f"{app}-preview", *wait)
        except StageFailed as exc:
            raise StageFailed(f"rollout of {app}-preview failed: {exc}; {keeps}", exc.details) from exc
        smoke = _smoke(kube, ns, bundle.one("Service", "preview"), cfg, ctx)
        if not smoke["passed"]:
            raise StageFailed(
                f"smoke test against {app}-preview failed: {'; '.join(smoke['failures'])}; {keeps}",
                json.dumps(smoke.get("mismatches", []))[:2000],
            )
        lease.check()
    finally:
        kube.delete("Deployment", ns, f"{app}-preview")  # its one pod has done its job either way
    changed.update(
        _apply(
            kube,
            bundle,
            [*bundle.pick("app"), *bundle.pick("live"), *bundle.pick("scaler"), *bundle.pick("budget"), *bundle.pick("policy")],
        )
    )
    try:
        dep = kube.wait_ready(ns, app, *wait)
    except StageFailed as exc:
        if before is None:
            raise
        _restore(kube, _restorable(before))
        raise StageFailed(f"{exc}; restored revision {_revision(before)} ({_image_of(before)})", exc.details) from exc
    release = _remember(ctx, {**_release(desired, bundle.image, None), "template": desired["spec"]["template"],
                              "annotations": _sluice_annotations(desired, {SPEC_HASH: spec_hash(desired)})})  # fmt: skip
    return {
        "release": release,
        "revision": _revision(dep),
        "previous_revision": _revision(before),
        "previous_image": _image_of(before),
        "changed": changed,
        "smoke": {k: v for k, v in smoke.items() if k != "cases"},
        "summary": f"{app} revision {_revision(dep)} is live",
    }


def _smoke(kube: Any, namespace: str, service: Mapping[str, Any], cfg: Mapping[str, Any], ctx: StageContext) -> dict[str, Any]:
    """GET /ready through the API server proxy, then replay serve.smoke's rows and compare."""
    from sluice.stages.serve_smoke import exercise

    settings = cfg["smoke"]
    if not settings["enabled"]:
        return {"passed": True, "failures": [], "skipped": True}
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    with kube.proxy_client(namespace, name, port) as client:
        ready = client.get("/ready")
        if ready.status_code != 200:
            return {"passed": False, "failures": [f"/ready answered {ready.status_code}: {ready.text[:300]}"]}
        if "smoke_cases" not in ctx.inputs:
            return {"passed": True, "failures": [], "rows": 0}
        report = json.loads(ctx.inputs["smoke_cases"].read_text())
        cases = report["cases"][: int(settings["rows"])]
        records, expected = [c["record"] for c in cases], [c["prediction"] for c in cases]
        return exercise(client, records, expected, report.get("task", "classification"), settings)


def _rollback_blue_green(
    kube: Any, record: dict[str, Any], cfg: Mapping[str, Any], ctx: StageContext, lease: Any
) -> tuple[dict[str, Any], str]:
    ns, app = record["namespace"], record["app"]
    service = kube.read("Service", ns, app)
    if service is None:
        raise StageFailed(f"Service {ns}/{app} is gone; cannot switch traffic")
    live = service["spec"]["selector"].get(COLOUR_LABEL)
    live_hash = _template_hash(kube.read("Deployment", ns, f"{app}-{live}"))
    target = _rollback_target(ctx, app, live_hash)
    name = target["deployment"]
    dep = kube.read("Deployment", ns, name)
    if _template_hash(dep) != target["template_hash"]:
        now = (
            f"{name} now runs {_image_of(dep)} (pod template {_template_hash(dep)}), which never passed"
            if dep
            else f"{name} no longer exists"
        )
        raise StageFailed(
            f"cannot roll back: the last release that passed its smoke test, {target['image']} "
            f"(pod template {target['template_hash']}) on {name}, is gone: {now}; traffic stays on {app}-{live}"
        )
    try:
        dep = kube.wait_ready(ns, name, float(cfg["rollout_timeout"]), float(cfg["poll_interval"]))
    except StageFailed as exc:
        raise StageFailed(f"cannot roll back: {name} is not ready ({exc}); traffic stays on {app}-{live}", exc.details) from exc
    lease.check()
    _select(kube, service, {COLOUR_LABEL: target["colour"], TEMPLATE_HASH: target["template_hash"]})
    image = record.get("image")
    record.update(
        live_colour=target["colour"],
        previous_colour=live,
        image={"reference": target["image"], "image_id": target.get("image_id"), "model_hash": target.get("model_hash")},
        previous_image=(image or {}).get("reference"),
        revision=_revision(dep),
        release=target,
    )
    return record, f"traffic switched from {app}-{live} back to {name} ({target['image']})"


def _rollback_target(ctx: StageContext, app: str, live_hash: str | None) -> dict[str, Any]:
    """The most recent release that passed its smoke test and is not the one serving now."""
    earlier = [r for r in _releases(ctx) if r["template_hash"] != live_hash]
    if not earlier:
        raise StageFailed(f"nothing to roll back to: no release of {app} other than the live one passed its smoke test")
    return earlier[-1]


def _release(deployment: Mapping[str, Any], image: Mapping[str, Any], colour: str | None) -> dict[str, Any]:
    return {
        "deployment": deployment["metadata"]["name"],
        "colour": colour,
        "template_hash": _template_hash(deployment),
        "image": _image_of(deployment),
        "image_id": image.get("image_id"),
        "model_hash": image.get("model_hash"),
        "passed_at": _now(),
    }


def _releases(ctx: StageContext) -> list[dict[str, Any]]:
    path = ctx.state_dir / RELEASES_FILE
    return list(json.loads(path.read_text())) if path.is_file() else []


def _remember(ctx: StageContext, release: dict[str, Any]) -> dict[str, Any]:
    """Records a release that just passed its smoke test (kept only if the stage succeeds)."""
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.state_dir / RELEASES_FILE, [*_releases(ctx), release][-KEEP_RELEASES:])
    return release


def label_template(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a Deployment whose pod template carries the hash of its rendered content."""
    out = copy.deepcopy(dict(obj))
    template = out["spec"]["template"]
    template["metadata"].setdefault("labels", {}).pop(TEMPLATE_HASH, None)
    # The track is where a pod runs (preview or stable), not what it runs: a preview pod that passed
    # carries the same hash as the stable pods made from it.
    hashed = copy.deepcopy(template)
    hashed["metadata"]["labels"].pop(TRACK_LABEL, None)
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:10]
    template["metadata"]["labels"][TEMPLATE_HASH] = digest
    return out


def _template_hash(dep: Mapping[str, Any] | None) -> str | None:
    return ((((dep or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels", {}).get(TEMPLATE_HASH)


def _rollback_rolling(
    kube: Any, record: dict[str, Any], cfg: Mapping[str, Any], ctx: StageContext, lease: Any
) -> tuple[dict[str, Any], str]:
    ns, app = record["namespace"], record["app"]
    current = kube.read("Deployment", ns, app)
    if current is None:
        raise StageFailed(f"Deployment {ns}/{app} is gone; cannot roll back")
    target = _rollback_target(ctx, app, _template_hash(current))
    if "template" not in target:
        raise StageFailed(
            f"cannot roll back: the release {target['image']} was recorded without its pod template "
            "(before sluice kept them); deploy it again instead"
        )
    lease.check()
    _restore(
        kube,
        {
            "metadata": {"namespace": ns, "name": app, "annotations": target.get("annotations") or {}},
            "spec": {"template": target["template"]},
        },
    )
    dep = kube.wait_ready(ns, app, float(cfg["rollout_timeout"]), float(cfg["poll_interval"]))
    record.update(
        revision=_revision(dep),
        previous_revision=_revision(current),
        release=target,
        previous_image=_image_of(current),
        image={"reference": _image_of(dep), "image_id": target.get("image_id"), "model_hash": target.get("model_hash")},
    )
    return record, f"{app} rolled back from {_image_of(current)} to {_image_of(dep)} (revision {_revision(dep)})"


def _restore(kube: Any, before: Mapping[str, Any]) -> None:
    """Puts an earlier pod template (and its spec hash) back on the live Deployment."""
    meta = before["metadata"]
    current = kube.read("Deployment", meta["namespace"], meta["name"])
    if current is None:
        return
    current["spec"]["template"] = before["spec"]["template"]
    current["metadata"].setdefault("annotations", {}).update(_sluice_annotations(before))
    kube.replace(current)


def _sluice_annotations(dep: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our annotations of a Deployment (spec hash, image id, model hash): they travel with its template."""
    return {**{k: v for k, v in (dep["metadata"].get("annotations") or {}).items() if k.startswith("sluice.dev/")}, **(extra or {})}


def _restorable(dep: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {k: dep["metadata"].get(k) for k in ("name", "namespace", "annotations")},
        "spec": {"template": dep["spec"]["template"]},
    }


def _gate_link(ctx: StageContext, image: Mapping[str, Any]) -> dict[str, Any] | None:
    """Links the gate report into the record. Fails closed: anything but a well-formed model.gate
    report with `"passed": true` for the model this image holds stops the deploy."""
    if "gate" not in ctx.inputs:
        return None
    path = ctx.inputs["gate"]
    rel = path.relative_to(ctx.workspace) if path.is_relative_to(ctx.workspace) else path
    data = path.read_bytes()
    report, problem = _gate_verdict(data, image.get("model_hash"))
    if problem:
        raise StageFailed(f"refusing to deploy: the gate report {rel} {problem}")
    return {"path": str(rel), "sha256": hashlib.sha256(data).hexdigest(), "passed": True, "model": report["model"]["sha256"]}


def _gate_verdict(data: bytes, model_hash: str | None) -> tuple[dict[str, Any], str | None]:
    """(report, None) when the report vouches for `model_hash`, else (…, what is wrong with it)."""
    try:
        report = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {}, f"is not valid JSON ({exc}); a truncated or half-written report vouches for nothing"
    if not isinstance(report, dict):
        return {}, f"is not a model.gate report (a JSON {type(report).__name__}, not an object)"
    if "passed" not in report:
        return report, 'has no "passed" field'
    passed = report["passed"]
    if passed is False:
        return report, "says the model did not pass"
    if passed is not True:
        kind = {str: "a string", int: "a number", float: "a number"}.get(type(passed), type(passed).__name__)
        return report, f'is not a well-formed model.gate report: "passed" is {json.dumps(passed)} ({kind}), not true'
    if not isinstance(report.get("verdicts"), list):
        return report, "is not a well-formed model.gate report: it has no verdicts list"
    model = report.get("model")
    gated = model.get("sha256") if isinstance(model, dict) else None
    if not isinstance(gated, str):
        return report, "names no model, so it cannot vouch for this image (give model.gate the model directory as its `model` input)"
    if not model_hash:
        return report, "names a model, but the image record names no model hash, so nothing ties the image to the gated model"
    if gated.lower() != str(model_hash).lower():
        return report, f"vouches for model {gated[:12]}, but the image holds model {str(model_hash)[:12]}"
    return report, None


def _append_history(ctx: StageContext, entry: Mapping[str, Any]) -> None:
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    with (ctx.state_dir / HISTORY_FILE).open("a") as fh:
        fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")


def _other(colour: str) -> str:
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def _image_of(dep: Mapping[str, Any] | None) -> str | None:
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"]) if dep else None


def _revision(dep: Mapping[str, Any] | None) -> str | None:
    from sluice.stages._kube import REVISION

    return (dep or {}).get("metadata", {}).get("annotations", {}).get(REVISION)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
