"""`sluice.remotes.yaml`: the remotes a workspace shares its cache through, committed beside the pipeline.

    version: 1
    default: team                  # what `--remote` with no name, push and pull use
    remotes:
      team:
        url: s3://bucket/sluice    # anything fsspec opens: s3://, file://, gs://, ssh://
        endpoint_url: http://127.0.0.1:8333   # S3-compatible servers only
        read_only: false           # true: pull, never push (pull-request runs)
        require_signed: false      # true: ignore run entries without a valid SLUICE_REMOTE_KEY signature
        bundles: true              # false: a push sends small objects only one by one (docs/remote.md)
        options: {}                # passed to the fsspec filesystem (never credentials)

The file is untrusted input like a spec: read through the guarded loader, bounded by the limits,
and every problem reported at its line and column. Credentials never live here: each backend
takes them from its own environment or profile (AWS_* and ~/.aws for s3fs, and so on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sluice.engine.errors import KeyPath, Location, Problem, SpecError, did_you_mean
from sluice.engine.limits import DEFAULT, Limits
from sluice.engine.load import Document, load_file

FILE_NAME = "sluice.remotes.yaml"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_KEYS = {"url", "endpoint_url", "read_only", "require_signed", "bundles", "options"}
# option names that carry secrets in some fsspec backend: refused, so none is ever committed
_SECRET = re.compile(r"(key|secret|password|passwd|passphrase|token|credential|session)", re.IGNORECASE)
# ...except paramiko's (ssh://) names that hold where a key is or whether to look for one, never the key
_NOT_SECRET = {"key_filename", "look_for_keys"}
_HEADER = "# Remotes for `sluice push`, `pull` and `run --remote` (docs/remote.md). No credentials here: commit it.\n"


@dataclass(frozen=True)
class RemoteConfig:
    name: str
    url: str
    endpoint_url: str | None = None
    read_only: bool = False
    require_signed: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    bundles: bool = True  # a push also writes the lock's small objects in bundles (remote/pack.py)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"url": self.url}
        if self.endpoint_url:
            body["endpoint_url"] = self.endpoint_url
        if self.read_only:
            body["read_only"] = True
        if self.require_signed:
            body["require_signed"] = True
        if not self.bundles:
            body["bundles"] = False
        if self.options:
            body["options"] = dict(self.options)
        return body


@dataclass(frozen=True)
class Remotes:
    file: Path
    remotes: Mapping[str, RemoteConfig] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def read(cls, path: Path, limits: Limits = DEFAULT, display: str | None = None) -> Remotes:
        """The remotes file, or none configured when it does not exist."""
        if not path.exists():
            return cls(path)
        doc = load_file(path, display or str(path), limits)
        return cls(path, *_parse(doc))

    def pick(self, name: str | None) -> RemoteConfig:
        """The remote `name`, or the default one; a SpecError saying what is configured otherwise."""
        here = Location("command line")
        if not self.remotes:
            raise SpecError(
                [Problem(here, f"no remote is configured ({self.file.name} is missing); add one with `sluice remote add NAME URL`")]
            )
        if name is None:
            if self.default is None and len(self.remotes) == 1:
                return next(iter(self.remotes.values()))
            if self.default is None:
                names = ", ".join(sorted(self.remotes))
                raise SpecError([Problem(here, f"several remotes ({names}) and no default: name one with --remote NAME")])
            name = self.default
        if name not in self.remotes:
            raise SpecError([Problem(here, f"no remote named '{name}' in {self.file.name}", hint=did_you_mean(name, self.remotes))])
        return self.remotes[name]

    def added(self, remote: RemoteConfig, make_default: bool) -> Remotes:
        remotes = {**self.remotes, remote.name: remote}
        return replace(self, remotes=remotes, default=remote.name if make_default else self.default)

    def removed(self, name: str) -> Remotes:
        self.pick(name)  # the same message for a name that is not there
        rest = {k: v for k, v in self.remotes.items() if k != name}
        return replace(self, remotes=rest, default=None if self.default == name else self.default)

    def render(self) -> bytes:
        body: dict[str, Any] = {"version": 1}
        if self.default:
            body["default"] = self.default
        body["remotes"] = {name: self.remotes[name].as_dict() for name in sorted(self.remotes)}
        return (_HEADER + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)).encode()


def check_new(name: str, url: str, endpoint_url: str | None) -> None:
    """The arguments of `sluice remote add`, checked like the file would be."""
    here = Location("command line")
    problems = [Problem(here, p) for p in (_name_problem(name), _url_problem(url), _endpoint_problem(endpoint_url)) if p]
    if problems:
        raise SpecError(problems)


def _name_problem(name: str) -> str:
    return "" if _NAME.match(name) else f"remote name {name!r} must start with a letter and hold only letters, digits, '_', '.', '-'"


def _url_problem(url: str) -> str:
    if "://" not in url:
        return f"remote URL {url!r} needs a scheme, e.g. s3://bucket/prefix or file:///srv/cache"
    if re.match(r"^[a-z0-9+.-]+://[^/@]*:[^/@]*@", url):
        return "the remote URL holds a password; credentials are never stored here (use the backend's environment or profile)"
    return ""


def _endpoint_problem(endpoint: str | None) -> str:
    if endpoint is None or re.match(r"^https?://[^\s/@]+(/\S*)?$", endpoint):
        return ""
    return f"endpoint_url {endpoint!r} must be an http:// or https:// address without credentials"


def _parse(doc: Document) -> tuple[dict[str, RemoteConfig], str | None]:
    problems: list[Problem] = []

    def bad(path: KeyPath, message: str, key: bool = False, hint: str | None = None) -> None:
        problems.append(Problem(doc.location(path, key=key), message, path, hint))

    data = doc.data
    if not isinstance(data, dict):
        raise SpecError([Problem(doc.location(()), "expected a mapping with 'version' and 'remotes'")])
    for key in data:
        if key not in ("version", "default", "remotes"):
            bad((key,), f"unknown key '{key}'", key=True, hint=did_you_mean(str(key), ["version", "default", "remotes"]))
    if data.get("version") != 1:
        bad(("version",), f"version must be 1, got {data.get('version')!r}")
    raw = data.get("remotes") or {}
    if not isinstance(raw, dict):
        bad(("remotes",), "remotes must be a mapping of name → settings")
        raw = {}
    remotes: dict[str, RemoteConfig] = {}
    for name, body in raw.items():
        at: KeyPath = ("remotes", name)
        if why := _name_problem(str(name)):
            bad(at, why, key=True)
        if not isinstance(body, dict):
            bad(at, "expected a mapping with at least 'url'")
            continue
        for key in body:
            if key not in _KEYS:
                bad((*at, key), f"unknown key '{key}'", key=True, hint=did_you_mean(str(key), _KEYS))
        url, endpoint, options = body.get("url"), body.get("endpoint_url"), body.get("options") or {}
        if not isinstance(url, str):
            bad((*at, "url"), "url is required and must be a string")
        elif why := _url_problem(url):
            bad((*at, "url"), why)
        if endpoint is not None and (not isinstance(endpoint, str) or _endpoint_problem(endpoint)):
            bad((*at, "endpoint_url"), _endpoint_problem(str(endpoint)))
        for flag in ("read_only", "require_signed", "bundles"):
            if not isinstance(body.get(flag, False), bool):
                bad((*at, flag), f"{flag} must be true or false")
        if not isinstance(options, dict):
            bad((*at, "options"), "options must be a mapping passed to the fsspec filesystem")
            options = {}
        for opt, value in options.items():
            if opt == "key_filename" and "PRIVATE KEY" in str(value):
                bad((*at, "options", opt), "key_filename must be the path of a key file, not the key", key=True)
            elif _SECRET.search(str(opt)) and opt not in _NOT_SECRET:
                bad((*at, "options", opt), f"'{opt}' looks like a credential; credentials are never stored here", key=True)
        if isinstance(url, str):
            remotes[str(name)] = RemoteConfig(
                str(name),
                url,
                endpoint,
                body.get("read_only") is True,
                body.get("require_signed") is True,
                dict(options),
                body.get("bundles") is not False,
            )
    default = data.get("default")
    if default is not None and default not in remotes:
        bad(("default",), f"default names no remote: {default!r}", hint=did_you_mean(str(default), remotes))
    if problems:
        raise SpecError(problems)
    return remotes, default
