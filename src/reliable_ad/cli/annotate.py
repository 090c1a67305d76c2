"""`reliable-ad annotate`: the annotation and human-evaluation web app (serve), its inputs (import),
its outputs for RFNet training and evaluation (export), and accounts (users)."""

from __future__ import annotations

import argparse
import getpass
import sys

from reliable_ad.cli.common import add_config_arg
from reliable_ad.cli.data import LABEL_CODES_HELP

# flag -> AnnotationConfig field
SERVER_FLAGS = {
    "db": "db", "host": "host", "port": "port", "k": "k", "order": "order", "prefetch": "prefetch",
    "lease_seconds": "lease_seconds", "secure_cookies": "secure_cookies",
    "max_import_bytes": "max_import_bytes", "max_import_records": "max_import_records",
    "login_attempts": "login_attempts", "login_attempts_per_address": "login_attempts_per_address",
}


def _config(args: argparse.Namespace):
    from reliable_ad.annotation.config import AnnotationConfig
    from reliable_ad.core.config import from_dict, load_config_file, merge_dicts

    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    if isinstance(data.get("annotation"), dict):  # a shared config file with an annotation section
        data = data["annotation"]
    overrides = {field: getattr(args, flag) for flag, field in SERVER_FLAGS.items()
                 if getattr(args, flag, None) is not None}
    return from_dict(AnnotationConfig, merge_dicts(data, overrides), where="annotation")


def _db_args(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)
    p.add_argument("--db", help="database: an SQLite file (default annotation.db) or postgresql://user:pw@host/db")


def add_parser(sub) -> None:
    p = sub.add_parser("annotate", help="annotation and human evaluation web app",
                       description="Label generated ads with RFNet's classes and rank images from several methods, "
                                   "in a web app on SQLite or PostgreSQL; export labels for RFNet training.")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])
    commands = p.add_subparsers(dest="annotate_command", metavar="ACTION")

    s = commands.add_parser("serve", help="run the web app", description="Run the annotation web app. With no admin "
                            "account yet, it prints an invite link to set the admin password.")
    _db_args(s)
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the whole network)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--prefetch", type=int, help="items preloaded ahead of the one shown (default 2)")
    s.add_argument("--lease-seconds", type=int,
                   help="an item held this long unanswered returns to the queue (default 1800; 120 s for someone "
                        "who has not answered anything in the batch yet)")
    s.add_argument("--login-attempts", type=int,
                   help="failed logins of one account from one address before that address must wait (default 5)")
    s.add_argument("--login-attempts-per-address", type=int,
                   help="failed logins from one address, all accounts, per 15 minutes before it must wait "
                        "(default 50)")
    s.add_argument("--secure-cookies", action="store_const", const=True,
                   help="send cookies over HTTPS only (behind TLS)")
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.set_defaults(func=run_serve)

    i = commands.add_parser("import", help="import a generation run, an RF1M folder or runs to compare",
                            description="Import a generation run (folder with manifest.jsonl, or the manifest), or an "
                                        "RF1M-style folder, as an availability batch; with --preference, two or more "
                                        "runs of different methods as sets to rank. All or nothing: a malformed or "
                                        "oversized input imports nothing. Importing again adds only new items. "
                                        "With --label-studio FILE: Label Studio's JSON export of tasks that "
                                        "`annotate export --format label-studio` wrote, as labels (or rankings) "
                                        "by its annotators; bad items are listed and the rest is imported.")
    _db_args(i)
    i.add_argument("paths", nargs="*", metavar="RUN_DIR|RF1M_DIR", help="what to import")
    i.add_argument("--label-studio", metavar="FILE",
                   help="import the answers in Label Studio's JSON export (Export -> JSON): users are matched or "
                        "created by completed_by (email, else label-studio-<id>), cancelled annotations skipped")
    i.add_argument("--name", help="batch name (default: the folder name); an existing batch gets the new items")
    i.add_argument("--k", type=int, help="answers wanted per item from different annotators (default 2)")
    i.add_argument("--order", choices=("sequential", "uncertainty", "random"),
                   help="queue order; uncertainty: RFNet's least certain verdicts first (active learning)")
    i.add_argument("--preference", action="store_true", help="the runs are methods to compare: make sets to rank")
    i.add_argument("--methods", nargs="+", metavar="NAME",
                   help="with --preference: a name per run (default: folder names)")
    i.add_argument("--skip-problems", action="store_true", help="import the valid records and list the others")
    i.add_argument("--allow-root", action="append", metavar="DIR",
                   help="also import files under DIR (repeatable); by default every image and product must lie "
                        "inside the imported folder, links followed")
    i.add_argument("--label-codes", metavar="NAME|FILE", help=LABEL_CODES_HELP + " (RF1M folders only)")
    i.add_argument("--max-import-bytes", type=int, help="refuse larger manifest or label files (default 512 MiB)")
    i.add_argument("--max-import-records", type=int, help="refuse more records (default 2,000,000)")
    i.set_defaults(func=run_import)

    e = commands.add_parser("export", help="export labels (RF1M, JSONL, Label Studio) or rankings",
                            description="Export availability labels as an RF1M-style folder (labels.txt, captions.json, "
                                        "products/) or as JSON Lines with every vote, both readable by RFNet's data "
                                        "readers; or, with --kind preference, every ranking plus a summary "
                                        "(jsonl), or preference pairs in HPSv3's training JSON (pairwise-json: "
                                        "prompt, path1 preferred, path2, confidence). --format label-studio writes "
                                        "Label Studio tasks and the labeling config into the --out folder "
                                        "(tasks.json + labeling_config.xml; with --kind preference "
                                        "pairwise_tasks.json + pairwise_config.xml).")
    _db_args(e)
    e.add_argument("--format", choices=("rf1m", "jsonl", "label-studio", "pairwise-json"), default="jsonl",
                   help="default jsonl; pairwise-json goes with --kind preference")
    e.add_argument("--out", required=True, help="a .jsonl or .json file, or a folder for rf1m and label-studio")
    e.add_argument("--url-prefix", metavar="PREFIX",
                   help="label-studio: image URLs are PREFIX + the path relative to --url-root, e.g. "
                        "https://host/ads/ where you serve the files, or /data/local-files/?d= for Label Studio's "
                        "local files (LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true, document root = --url-root); "
                        "default: paths relative to --out")
    e.add_argument("--url-root", metavar="DIR", help="label-studio: the folder --url-prefix serves (default --out)")
    e.add_argument("--kind", choices=("availability", "preference"), default="availability")
    e.add_argument("--batch", nargs="+", metavar="NAME", help="only these batches (default: all of the kind)")
    e.add_argument("--min-votes", type=int, default=1, help="leave out images with fewer labels (default 1)")
    e.set_defaults(func=run_export)

    u = commands.add_parser("users", help="add or list accounts", description="Add an account (with an invite link, "
                            "or a password read from stdin) or list accounts.")
    _db_args(u)
    u.add_argument("action", choices=("add", "list", "invite"), help="add NAME, list, or invite NAME (a new link)")
    u.add_argument("username", nargs="?")
    u.add_argument("--admin", action="store_true", help="with add: an admin account")
    u.add_argument("--password-stdin", action="store_true", help="with add: read the password from stdin, no invite")
    u.set_defaults(func=run_users)


def run_serve(args: argparse.Namespace) -> int:
    from reliable_ad.annotation.server import serve

    serve(_config(args), access_log=args.access_log)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import ImportRejected, Limits, import_availability, import_preference

    config = _config(args)
    limits = Limits(config.max_import_bytes, config.max_import_records)
    if args.label_studio:
        return _import_label_studio(args, config, limits)
    if not args.paths:
        raise ValueError("annotate import needs a RUN_DIR or RF1M_DIR (or --label-studio FILE); see --help")
    if args.methods and not args.preference:
        raise ValueError("--methods names the runs of a --preference import; add --preference")
    if not args.preference and len(args.paths) > 1 and args.name:
        raise ValueError("--name with several paths would merge different runs into one batch; import them one by one")
    db = Database(config.db)
    try:
        if args.preference:
            summaries = [import_preference(db, args.paths, methods=args.methods, name=args.name, k=config.k,
                                           limits=limits, skip_problems=args.skip_problems,
                                           allow_roots=args.allow_root)]
        else:
            summaries = [import_availability(db, path, name=args.name, k=config.k, order=config.order, limits=limits,
                                             skip_problems=args.skip_problems, allow_roots=args.allow_root,
                                             label_codes=args.label_codes)
                         for path in args.paths]
    except ImportRejected as e:
        print(f"reliable-ad annotate import: {e}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    for s in summaries:
        extra = [f"{s.present} already there"] if s.present else []
        extra += [f"{s.failed_generations} failed generations left out"] if s.failed_generations else []
        extra += [f"{s.unmatched} images without a counterpart in another run"] if s.unmatched else []
        extra += [f"{len(s.problems)} problem records skipped"] if s.problems else []
        what = "sets to rank" if s.kind == "preference" else "items"
        details = f" ({'; '.join(extra)})" if extra else ""
        print(f"batch {s.batch!r} (id {s.batch_id}): {s.added} new {what}{details}")
    return 1 if any(s.problems for s in summaries) else 0


def _import_label_studio(args: argparse.Namespace, config, limits) -> int:
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.label_studio import import_label_studio

    if args.paths or args.preference or args.name or args.methods:
        raise ValueError("--label-studio FILE imports answers into the batches its tasks came from; drop the "
                         "RUN_DIR, --preference, --name and --methods")
    db = Database(config.db)
    try:
        s = import_label_studio(db, args.label_studio, limits=limits)
    finally:
        db.dispose()
    for p in s.problems:
        print(f"skipped: {p}", file=sys.stderr)
    created = f"; new users {', '.join(s.users_created)} (give them a password with `users invite NAME`)" \
        if s.users_created else ""
    print(f"{args.label_studio}: {s.tasks} tasks, {s.added} answers imported, {s.present} already there, "
          f"{s.cancelled} cancelled skipped, {len(s.problems)} problem(s){created}")
    return 1 if s.problems else 0


def run_export(args: argparse.Namespace) -> int:
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.exporter import export_jsonl, export_pairwise_json, export_preference, export_rf1m
    from reliable_ad.annotation.label_studio import export_label_studio

    if (args.url_prefix or args.url_root) and args.format != "label-studio":
        raise ValueError(f"--url-prefix/--url-root set the image URLs of --format label-studio, not {args.format}; "
                         "drop them or pass --format label-studio")
    if args.format == "pairwise-json" and args.kind != "preference":
        raise ValueError("--format pairwise-json exports rankings as preference pairs; add --kind preference")
    db = Database(_config(args).db)
    try:
        if args.format == "label-studio":
            summary = export_label_studio(db, args.out, kind=args.kind, batches=args.batch,
                                          url_prefix=args.url_prefix, url_root=args.url_root)
        elif args.format == "pairwise-json":
            summary = export_pairwise_json(db, args.out, batches=args.batch, min_votes=args.min_votes)
        elif args.kind == "preference":
            if args.format != "jsonl":
                raise ValueError(f"--format {args.format} exports labels; rankings export as --format jsonl or "
                                 "pairwise-json")
            summary = export_preference(db, args.out, batches=args.batch)
        elif args.format == "rf1m":
            summary = export_rf1m(db, args.out, batches=args.batch, min_votes=args.min_votes)
        else:
            summary = export_jsonl(db, args.out, batches=args.batch, min_votes=args.min_votes)
    finally:
        db.dispose()
    if args.format == "label-studio":
        print(f"wrote {summary.records} Label Studio tasks to {summary.path}, the labeling config beside it; "
              "create a project with the config, then import the tasks")
        return 0
    left_out = (f"; {summary.below_min_votes} with fewer than {args.min_votes} votes left out"
                if summary.below_min_votes else "")
    left_out += f"; {summary.ties} tied pairs left out" if getattr(summary, "ties", 0) else ""
    print(f"wrote {summary.records} records ({summary.votes} answers) to {summary.path}{left_out}")
    return 0


def run_users(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from reliable_ad.annotation import security
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.models import User

    config = _config(args)
    db = Database(config.db)
    try:
        if args.action == "list":
            with db.read() as s:
                for u in s.scalars(select(User).order_by(User.id)):
                    status = "disabled" if not u.active else ("invited" if u.password_hash is None else "active")
                    print(f"{u.username:24s} {u.role:10s} {status}")
            return 0
        if not args.username:
            raise ValueError(f"`users {args.action}` needs a user name")
        with db.write() as s:
            if args.action == "add":
                password = None
                if args.password_stdin:
                    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
                _, token = security.create_user(s, args.username, "admin" if args.admin else "annotator",
                                                password=password, invite_hours=config.invite_hours)
            else:
                user = s.scalar(select(User).where(User.username == args.username))
                if user is None:
                    raise ValueError(f"no user {args.username!r}; add it with `users add`")
                token = security.reinvite(s, user, config.invite_hours)
        if token:
            print(f"invite link for {args.username} (valid {config.invite_hours:g} h): "
                  f"http://<server>:{config.port}/invite#{token}")
        else:
            print(f"user {args.username} added")
        return 0
    finally:
        db.dispose()
