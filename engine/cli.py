"""`sluice`: parse arguments → call the engine → render → exit code. No logic lives here.

Exit codes: 0 success · 1 a stage failed (or another runtime error) · 2 a problem in the spec
or the command line · 3 the workspace is busy with another run · 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sluice import __version__
from sluice.engine.errors import Location, Problem, SluiceError, SpecError

COMMAND_GROUP = "sluice.commands"  # entry points: name -> callable(subparsers) adding a command that sets `run`

if TYPE_CHECKING:
    from sluice.engine.api import Loaded

EXIT_OK, EXIT_FAILED, EXIT_SPEC = 0, 1, 2
# Kept in step with sluice.engine.dag.view.FORMATS; not imported from there so `--help` stays cheap.
DAG_FORMATS = ("text", "json", "dot", "mermaid", "svg", "png", "html")
_REHASH = "distrust the stat cache: read every input and output again"
_SHOWN = 10  # revisions named in gc's summary line; --json lists them all


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", type=Path, default=Path("pipeline.yaml"), help="pipeline file (default: ./pipeline.yaml)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a param, e.g. --set model.C=0.5")
    p.add_argument("--params", type=Path, help="YAML file of params merged over the pipeline's")
    p.add_argument("--cache-dir", type=Path, help="cache location (default: .sluice/cache, or $SLUICE_CACHE_DIR)")


def parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; `argv` decides which plugin commands are loaded (see _plugin_commands)."""
    ap = argparse.ArgumentParser(prog="sluice", description="Declarative, cached, parallel pipelines for ML CI/CD.")
    ap.add_argument("--version", action="version", version=f"sluice {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check pipeline files without running anything")
    v.add_argument("files", nargs="*", type=Path, help="pipeline files (default: ./pipeline.yaml)")
    v.add_argument("--json", action="store_true", help="problems as JSON")

    r = sub.add_parser("run", help="run the stages that are stale")
    r.add_argument("stages", nargs="*", help="run only these stages (and what they depend on)")
    _add_spec_args(r)
    r.add_argument("-j", "--jobs", type=_positive, help="stages run at once (default: CPU count)")
    r.add_argument("--force", action="store_true", help="run selected stages even if up to date (re-reads their inputs)")
    r.add_argument("--rehash", action="store_true", help=_REHASH)
    r.add_argument("--dry-run", action="store_true", help="print what would run, and why; run nothing")
    r.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")
    r.add_argument("-v", "--verbose", action="store_true", help="also list skipped stages")
    r.add_argument(
        "--markdown-summary", type=Path, metavar="PATH", help="append the run summary to PATH as a Markdown table (CI job summaries)"
    )
    r.add_argument("--remote", metavar="NAME", help="on a local cache miss look the stage up on this remote; push what runs")
    r.add_argument("--read-only", action="store_true", help="with --remote: pull, never push (pull-request runs)")

    rm = sub.add_parser("remote", help="configure the remotes the cache is shared through (sluice.remotes.yaml)")
    rms = rm.add_subparsers(dest="remote_command", required=True, metavar="ACTION")
    ra = rms.add_parser("add", help="add or replace a remote")
    ra.add_argument("name")
    ra.add_argument("url", help="an fsspec URL: s3://bucket/prefix, file:///srv/cache, gs://…, ssh://…")
    ra.add_argument("--read-only", action="store_true", help="clients only pull from it")
    ra.add_argument("--endpoint-url", metavar="URL", help="an S3-compatible server's address")
    ra.add_argument("--default", action="store_true", help="make it the default remote (the first one added is)")
    for name, what in (("list", "list the remotes"), ("remove", "remove a remote")):
        one = rms.add_parser(name, help=what)
        if name == "remove":
            one.add_argument("name")
        one.add_argument("--json", action="store_true") if name == "list" else None
    for one in (ra, *rms.choices.values()):
        if not any(a.dest == "file" for a in one._actions):
            one.add_argument(
                "-f", "--file", type=Path, default=Path("pipeline.yaml"), help="pipeline file beside which the remotes file lives"
            )

    for name, what in (("push", "upload the lock's stages' outputs and run entries to a remote"), ("pull", "download them into the cache")):
        t = sub.add_parser(name, help=what)
        t.add_argument("stages", nargs="*", help="only these stages (and what they depend on)")
        _add_spec_args(t)
        t.add_argument("-r", "--remote", metavar="NAME", help="which remote (default: the default one)")
        t.add_argument("--run-cache", action="store_true", help="every run entry, not only the lock's")
        t.add_argument("--json", action="store_true", help="print the figures as JSON")

    s = sub.add_parser("status", help="list stale stages and why")
    s.add_argument("stages", nargs="*")
    _add_spec_args(s)
    s.add_argument("--json", action="store_true")
    s.add_argument("--rehash", action="store_true", help=_REHASH)

    d = sub.add_parser("dag", help="show the stage graph")
    _add_spec_args(d)
    d.add_argument(
        "--format",
        default="text",
        choices=DAG_FORMATS,
        help="text (terminal), json, dot, mermaid, html (self-contained page); svg and png need Graphviz",
    )
    d.add_argument("--status", action="store_true", help="colour each stage: up to date, stale (and why), failed, never run")
    d.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")

    sc = sub.add_parser("schema", help="print the JSON Schema for pipeline files, with every installed plugin's config")
    sc.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")

    rb = sub.add_parser("rollback", help="switch a deploy stage back to its previous release")
    rb.add_argument("stage")
    _add_spec_args(rb)

    ca = sub.add_parser("cache", help="look after the cache")
    cv = ca.add_subparsers(dest="cache_command", required=True, metavar="ACTION").add_parser(
        "verify", help="re-hash every object, check every run entry; set the bad ones aside (exit 1 if any)"
    )
    _add_cache_args(cv)
    cv.add_argument("--delete", action="store_true", help="delete bad objects and entries instead of moving them to <cache>/quarantine")

    g = sub.add_parser("gc", help="remove cache objects and run entries that no lock entry and no recent run names")
    _add_cache_args(g)
    g.add_argument(
        "--keep-days",
        type=_non_negative,
        default=7.0,
        metavar="N",
        help="keep run entries younger than N days, and what they name (default: 7); they protect other checkouts sharing the cache",
    )
    g.add_argument("--dry-run", action="store_true", help="print what would be removed and how many bytes; remove nothing")
    g.add_argument(
        "--rev",
        action="append",
        default=[],
        dest="revs",
        metavar="REV",
        help="also keep what sluice.lock names at this git revision (a branch, tag or commit); repeatable",
    )
    g.add_argument("--all-branches", action="store_true", help="also keep what the lock of every local git branch names")
    g.add_argument("--all-tags", action="store_true", help="also keep what the lock of every git tag names")
    g.add_argument("--all-commits", action="store_true", help="also keep what every version of the lock in the git history names")

    ex = sub.add_parser("export", help="generate a CI workflow that runs the pipeline with a cache (github-actions)")
    ex.add_argument("target", nargs="?", help="what to generate: github-actions")
    ex.add_argument("-f", "--file", type=Path, default=Path("pipeline.yaml"), help="pipeline file (default: ./pipeline.yaml)")
    ex.add_argument("-o", "--output", type=Path, help="where to write (default: .github/workflows/sluice.yml at the repository root)")
    ex.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the file is stale (no target: every generated file in the repository)",
    )
    ex.add_argument("--install", metavar="CMD", help="the install command (default: from requirements.txt or pyproject.toml)")
    ex.add_argument("--python", metavar="VERSION", help="Python version for CI (default: 3.11)")
    ex.add_argument(
        "--branch", dest="branches", action="append", metavar="NAME", help="pushes to this branch run it (repeatable; default: main)"
    )
    ex.add_argument("--remote", metavar="NAME", help="which configured remote CI uses (default: the default or only one)")
    _plugin_commands(sub, argv or [])
    return ap


def _plugin_commands(sub: Any, argv: Sequence[str]) -> None:
    """Subcommands from the `sluice.commands` entry points (name -> callable adding its subparser and
    setting `run`). Only the one asked for is imported, so `sluice run` never loads the server; all
    are, for help or a command nobody claims (argparse then lists them)."""
    wanted = next((a for a in argv if not a.startswith("-")), None)
    if wanted in sub.choices:
        return
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=COMMAND_GROUP) if ep.name not in sub.choices}  # no shadowing built-ins
    for name, ep in sorted(found.items()):
        if wanted not in found or name == wanted:
            ep.load()(sub)


def _add_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--file",
        type=Path,
        default=Path("pipeline.yaml"),
        help="pipeline file whose folder holds sluice.lock (default: ./pipeline.yaml)",
    )
    p.add_argument("--cache-dir", type=Path, help="cache location (default: .sluice/cache, or $SLUICE_CACHE_DIR)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--remote", metavar="NAME", help="act on this remote (sluice.remotes.yaml) instead of the local cache")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def run() -> NoReturn:
    """The `sluice` command: `main`, then exit with its code."""
    code = main()
    # The interpreter's last collections walk every object still alive: after botocore and s3fs that was
    # 0.1 s of each command with a remote (measured). Frozen, they are skipped; every file is closed by now.
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _dispatch(args)
    except SpecError as exc:
        if args.debug:
            raise
        from sluice.engine.report import print_problems

        print_problems(exc.problems, sys.stderr)
        n = len(exc.problems)
        sys.stderr.write(f"{n} problem{'s' if n != 1 else ''} found.\n")
        return exc.exit_code
    except SluiceError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"sluice: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("sluice: interrupted\n")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from sluice.engine import api

    if args.command == "validate":
        files = args.files or [api.DEFAULT_FILE]
        notes: list[Problem] = []
        problems = api.validate(files, notes=notes)
        if args.json:
            import json

            doc = {"ok": not problems, "problems": [p.as_dict() for p in problems], "notes": [n.as_dict() for n in notes]}
            print(json.dumps(doc, indent=2))
        else:
            from sluice.engine.report import print_notes, print_problems

            print_notes(notes, sys.stdout)
            print_problems(problems, sys.stdout)
            if problems:
                print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found.")
            else:
                print(f"{len(files)} file{'s' if len(files) != 1 else ''} valid.")
        return EXIT_SPEC if problems else EXIT_OK

    if args.command == "schema":
        return _schema(args)

    if getattr(args, "run", None) is not None:  # a plugin's command (sluice.commands) runs itself
        return int(args.run(args))

    if args.command in ("cache", "gc"):
        return _maintenance(args)
    if args.command == "remote":
        return _remote(args)

    if args.command == "export":
        return _export(args)

    loaded = api.load(args.file, args.sets, args.params, args.cache_dir)
    if args.command == "status":
        from sluice.engine.report import print_status

        print_status(api.status(loaded, args.stages, rehash=args.rehash), args.json, sys.stdout)
        return EXIT_OK
    if args.command == "run":
        return _run(loaded, args)
    if args.command in ("push", "pull"):
        return _transfer(loaded, args)
    if args.command == "dag":
        from sluice.engine.dag.render import render
        from sluice.engine.dag.view import build

        if args.format == "png" and args.output is None and sys.stdout.isatty():
            raise SluiceError("PNG is binary: write it with -o FILE (or redirect stdout)")
        view = build(loaded.pipeline, api.status(loaded) if args.status else None, loaded.layout)
        color = args.output is None and args.format == "text" and sys.stdout.isatty()
        _emit(render(view, args.format, color=color), args.output)
        return EXIT_OK
    if args.command == "rollback":
        print(api.rollback(loaded, args.stage))
        return EXIT_OK
    raise AssertionError(args.command)


def _schema(args: argparse.Namespace) -> int:
    import json

    from sluice.engine.registry import Registry
    from sluice.engine.schema_bundle import build

    bundle = build(Registry.discover())
    for why in bundle.skipped:
        sys.stderr.write(f"sluice: warning: plugin left out of the schema: {why}\n")
    _emit(json.dumps(bundle.schema, indent=2) + "\n", args.output)
    return EXIT_OK


def _emit(data: str | bytes, output: Path | None) -> None:
    if output is None:
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data)
    elif isinstance(data, bytes):
        output.write_bytes(data)
    else:
        output.write_text(data)


def _run(loaded: Loaded, args: argparse.Namespace) -> int:
    from sluice.engine import api
    from sluice.engine.report import ConsoleReporter, PipeSafe, QuietReporter, append_markdown_summary, print_status, summary_json

    if args.dry_run:
        print_status(api.status(loaded, args.stages, args.force, args.rehash), args.json, sys.stdout)
        return EXIT_OK
    workspace = loaded.layout.workspace
    if args.json:
        summary = api.run(loaded, QuietReporter(), args.stages, args.jobs, args.force, args.rehash, args.remote, args.read_only)
        out = PipeSafe(sys.stdout)  # a reader gone (Ctrl-C on `sluice run --json | jq`) must not cost the exit code
        out.write(summary_json(summary, workspace) + "\n")
        out.flush()
    else:
        console = ConsoleReporter(workspace, verbose=args.verbose)
        summary = api.run(loaded, console, args.stages, args.jobs, args.force, args.rehash, args.remote, args.read_only)
        console.summary(summary)
    if args.markdown_summary is not None:
        append_markdown_summary(args.markdown_summary, summary)
    if summary.interrupted:
        return 130
    return EXIT_FAILED if summary.failed else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from sluice.engine import api
    from sluice.engine.export.protocol import Options

    if args.target is None and not args.check:
        raise SpecError([Problem(Location("command line"), "name what to export, e.g. `sluice export github-actions`")])
    options = Options(args.install, args.python or Options.python, tuple(args.branches) if args.branches else Options.branches, args.remote)
    if not args.check:
        done = api.export(args.target, args.file, args.output, options)
        print(f"{api.display_path(done.path)} {'is up to date' if done.current else 'written'}")
        return EXIT_OK
    checked = api.export_check(args.target, args.file, args.output, options)
    stale = [c for c in checked if not c.current]
    for c in stale:
        what = "is stale" if c.path.exists() else "does not exist"
        sys.stderr.write(f"{api.display_path(c.path)}: {what}; regenerate it with: {c.command}\n")
    if not stale:
        print(f"{_n(len(checked), 'generated file')} up to date" if checked else "no generated files found")
    return EXIT_FAILED if stale else EXIT_OK


def _remote(args: argparse.Namespace) -> int:
    import json

    from sluice.engine import api

    if args.remote_command == "add":
        remotes = api.remote_add(args.name, args.url, args.file, args.read_only, args.endpoint_url, args.default)
        default = " (default)" if remotes.default == args.name else ""
        print(f"remote '{args.name}' → {args.url} saved in {api.display_path(remotes.file)}{default}")
        return EXIT_OK
    if args.remote_command == "remove":
        remotes = api.remote_remove(args.name, args.file)
        print(f"remote '{args.name}' removed from {api.display_path(remotes.file)}")
        return EXIT_OK
    remotes = api.read_remotes(args.file)
    if args.json:
        print(json.dumps({"default": remotes.default, "remotes": {n: r.as_dict() for n, r in remotes.remotes.items()}}, indent=2))
        return EXIT_OK
    for name, r in sorted(remotes.remotes.items()):
        flags = [f for f, on in (("default", name == remotes.default), ("read-only", r.read_only), ("signed", r.require_signed)) if on]
        endpoint = f" at {r.endpoint_url}" if r.endpoint_url else ""
        print(f"{name}\t{r.url}{endpoint}{'  (' + ', '.join(flags) + ')' if flags else ''}")
    if not remotes.remotes:
        print("no remotes configured; add one with `sluice remote add NAME URL`")
    return EXIT_OK


def _transfer(loaded: Loaded, args: argparse.Namespace) -> int:
    import json

    from sluice.engine import api

    moved = (api.push if args.command == "push" else api.pull)(loaded, args.stages, args.remote, args.run_cache)
    if args.json:
        print(json.dumps(moved.as_dict(), indent=2))
    else:
        for line in moved.problems:
            print(f"sluice: {line}", file=sys.stderr)
        verb = "pushed to" if args.command == "push" else "pulled from"
        print(
            f"{verb} '{moved.remote}': {_n(moved.entries, 'run entry', 'run entries')},"
            f" {_n(moved.objects, 'object')} ({moved.bytes:,} bytes)"
        )
    return EXIT_FAILED if moved.problems else EXIT_OK


def _maintenance(args: argparse.Namespace) -> int:
    import json

    from sluice.engine import api

    if args.command == "cache":
        report = api.cache_verify(args.file, args.cache_dir, args.delete, args.remote)
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            for bad in report.bad:
                hashes = f" (expected {bad.expected}, got {bad.actual or 'nothing'})" if bad.expected else ""
                print(f"{bad.path}: {bad.problem}{hashes}")
            tail = f"; {report.action}" if report.bad else ""
            if report.bad and report.action == "quarantined":
                tail += f" in {report.quarantine} (`sluice gc` empties it)"
            print(
                f"{_n(report.objects, 'object')} checked ({report.bytes:,} bytes), "
                f"{_n(report.entries, 'run entry', 'run entries')}, {len(report.bad)} bad{tail}"
            )
        return EXIT_FAILED if report.bad else EXIT_OK
    from sluice.engine.revisions import Choice

    revisions = Choice(tuple(args.revs), args.all_branches, args.all_tags, args.all_commits)
    gc = api.gc(args.file, args.cache_dir, args.keep_days, args.dry_run, args.remote, revisions)
    if args.json:
        print(json.dumps(gc.as_dict(), indent=2))
        return EXIT_OK
    for path in gc.removed if args.dry_run else ():
        print(f"would remove {path}")
    if gc.revisions:
        shown = [f"{r.name} {r.commit[:10]}" if r.name != r.commit else r.commit[:10] for r in gc.revisions[:_SHOWN]]
        named = ", ".join(s + ("" if r.found else f" (no {r.lock})") for s, r in zip(shown, gc.revisions, strict=False))
        named += f" and {len(gc.revisions) - _SHOWN} more" if len(gc.revisions) > _SHOWN else ""
        print(f"kept what the locks of {_n(len(gc.revisions), 'git revision')} name: {named}")
    verb, freed = ("would remove", "freeing") if args.dry_run else ("removed", "freed")
    print(
        f"{verb} {_n(gc.objects, 'object')} and {_n(gc.entries, 'run entry', 'run entries')}, {freed} {gc.bytes:,} bytes;"
        f" kept {_n(gc.kept_objects, 'object')} and {_n(gc.kept_entries, 'run entry', 'run entries')}"
        + (f"; {'would abort' if args.dry_run else 'aborted'} {_n(gc.uploads, 'unfinished upload')}" if gc.uploads else "")
        + (f"; {verb} {_n(gc.packs, 'lock pack')}" if gc.packs else "")
        + (f"; {verb} {_n(gc.bundles, 'bundle')} of small objects" if gc.bundles else "")
    )
    return EXIT_OK


def _n(count: int, one: str, many: str = "") -> str:
    from sluice.engine.report import plural  # report is imported only by the commands that print it

    return plural(count, one, many)
