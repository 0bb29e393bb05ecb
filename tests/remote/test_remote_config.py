"""`sluice remote add/list/remove` and sluice.remotes.yaml as untrusted input."""

from __future__ import annotations

from tests.conftest import Workspace


def test_add_list_remove(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages: {}\n")
    assert ws.sluice("remote", "add", "team", "s3://bucket/sluice", "--endpoint-url", "http://127.0.0.1:8333").code == 0
    assert ws.sluice("remote", "add", "pr", "s3://bucket/sluice", "--read-only").code == 0
    assert "default: team" in ws.read("sluice.remotes.yaml")
    listed = ws.sluice("remote", "list", "--json").json()
    assert listed == {
        "default": "team",
        "remotes": {
            "pr": {"url": "s3://bucket/sluice", "read_only": True},
            "team": {"url": "s3://bucket/sluice", "endpoint_url": "http://127.0.0.1:8333"},
        },
    }
    assert ws.sluice("remote", "add", "pr", "file:///srv/cache", "--default").code == 0
    assert ws.sluice("remote", "list", "--json").json()["default"] == "pr"
    assert ws.sluice("remote", "remove", "pr").code == 0
    assert ws.sluice("remote", "list", "--json").json() == {
        "default": None,
        "remotes": {"team": {"url": "s3://bucket/sluice", "endpoint_url": "http://127.0.0.1:8333"}},
    }
    gone = ws.sluice("remote", "remove", "tema")
    assert gone.code == 2 and "did you mean 'team'" in gone.err


def test_credentials_are_refused(ws: Workspace) -> None:
    res = ws.sluice("remote", "add", "team", "ssh://me:hunter2@host/cache")
    assert res.code == 2 and "password" in res.err and not (ws.root / "sluice.remotes.yaml").exists()
    ws.write("sluice.remotes.yaml", "version: 1\nremotes:\n  team:\n    url: s3://b/p\n    options:\n      secret: abc\n")
    res = ws.sluice("remote", "list")
    assert res.code == 2 and "sluice.remotes.yaml:6:7" in res.err and "credential" in res.err


def test_a_bad_remotes_file_is_reported_where_it_is_wrong(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a: {cmd: 'true', outputs: {o: o.txt}}\n")
    ws.write(
        "sluice.remotes.yaml",
        "version: 1\nremotes:\n  team:\n    url: s3://b/p\n    read_olny: true\n    require_signed: maybe\n    bundles: 'no'\n",
    )
    res = ws.sluice("run", "--remote", "team")
    assert res.code == 2
    assert "sluice.remotes.yaml:5:5: remotes.team.read_olny: unknown key 'read_olny' (did you mean 'read_only'?)" in res.err
    assert "sluice.remotes.yaml:6:21: remotes.team.require_signed: require_signed must be true or false" in res.err
    assert "sluice.remotes.yaml:7:14: remotes.team.bundles: bundles must be true or false" in res.err
    assert not (ws.root / "o.txt").exists()  # refused before anything ran
    ws.write("sluice.remotes.yaml", "version: 1\nremotes: {team: {url: s3://b/p}}\n")
    res = ws.sluice("run", "--remote", "other")
    assert res.code == 2 and "no remote named 'other'" in res.err


def test_the_file_is_bounded(ws: Workspace) -> None:
    ws.write("sluice.remotes.yaml", "version: 1\nremotes: {}\n" + "#" * 5000 + "\n")
    res = ws.sluice("remote", "list", env={"SLUICE_MAX_SPEC_BYTES": "1000"})
    assert res.code == 2 and "SLUICE_MAX_SPEC_BYTES" in res.err


def test_an_ssh_key_path_is_allowed_but_never_a_key_or_its_passphrase(ws: Workspace) -> None:
    body = "version: 1\nremotes:\n  team:\n    url: ssh://ci@cache.example.com/srv/sluice\n    options:\n"
    ws.write("sluice.remotes.yaml", body + "      key_filename: /home/ci/.ssh/sluice_cache\n      look_for_keys: false\n")
    res = ws.sluice("remote", "list", "--json")
    assert res.code == 0, res.err
    assert res.json()["remotes"]["team"]["options"] == {"key_filename": "/home/ci/.ssh/sluice_cache", "look_for_keys": False}
    ws.write("sluice.remotes.yaml", body + "      key_filename: '-----BEGIN OPENSSH PRIVATE KEY----- b3Bl'\n      passphrase: hunter2\n")
    res = ws.sluice("remote", "list")
    assert res.code == 2
    assert "sluice.remotes.yaml:6:7: remotes.team.options.key_filename: key_filename must be the path of a key file" in res.err
    assert "sluice.remotes.yaml:7:7: remotes.team.options.passphrase: 'passphrase' looks like a credential" in res.err
