"""`labelloop serve | migrate | consume | keys | purge | relabel | export | advise | simulate`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path

from service import logs
from service.auth.keys import Scope
from service.config import Settings
from service.core.policy import PolicyError, PolicySet, load_policies


def _serve(settings: Settings) -> int:
    import uvicorn

    from service.api.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    # Our handler for uvicorn's loggers too; the access log is ours (service/api/access_log.py).
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None, access_log=False
    )
    return 0


def _migrate(settings: Settings) -> int:
    from service.store import migrate
    from service.store.database import create_engine

    async def run() -> None:
        engine = create_engine(settings.database_url, "labelloop-migrate", settings.timeouts)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"migrated {settings.database_url.split('@')[-1]} to head")
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from service.cli_keys import run_keys

    return run_keys(settings, args)


def _purge(settings: Settings, policies: PolicySet, dry_run: bool) -> int:
    """What each use case's retention let expire, deleted now (or counted, with --dry-run)."""
    from service.clock import utcnow
    from service.store import erasure
    from service.store.database import Database, create_engine

    retained = {uc: p.retention for uc, p in sorted(policies.use_cases.items()) if p.retention is not None}
    if not retained:
        print("no use case has a retention: nothing to purge")
        return 0

    async def run() -> None:
        db = Database(create_engine(settings.database_url, "labelloop-purge", settings.timeouts))
        now = utcnow()
        try:
            if dry_run:
                async with db.read() as conn:
                    for use_case, retention in retained.items():
                        count = await erasure.due(conn, use_case, now - retention)
                        print(f"{use_case}: {count} predictions served before {(now - retention).isoformat()} would go")
                return
            purged = await erasure.purge_expired(db, policies, now, "cli", settings.sweep_limit)
            for use_case, gone in purged.items():
                print(f"{use_case}: purged {gone.predictions} predictions, {gone.events} events, {gone.labels} labels")
        finally:
            await db.dispose()

    asyncio.run(run())
    return 0


def _consume(settings: Settings) -> int:
    from consumers.main import consume

    if not settings.kafka_mode:
        print("labelloop consume: set LABELLOOP_KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(consume(settings))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from service.simulate.command import run_simulate

    return run_simulate(
        args.scenario,
        rate=args.rate,
        duration=args.duration,
        grace=args.grace,
        seed=args.seed,
        url=args.url,
        as_json=args.json,
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _not_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number at least 0, not {text}")
    return value


def _served_from(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset, as the API takes served_at."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a UTC offset (Z or +00:00): {text}")
    return value


def _batch(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100000, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="labelloop", description="Streaming natural-label collection. Settings: LABELLOOP_* variables."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (and, on SQLite, migrate first)")
    serve.add_argument("--host", help="default: LABELLOOP_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: LABELLOOP_PORT (8000)")
    commands.add_parser("migrate", help="apply database migrations to LABELLOOP_DATABASE_URL")
    commands.add_parser("consume", help="run a Kafka joiner (consumer group LABELLOOP_KAFKA_GROUP_ID)")
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="a new key, printed once")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. web-app")
    create.add_argument(
        "--scope", action="append", required=True, choices=[s.value for s in Scope], help="repeat for several"
    )
    create.add_argument(
        "--output",
        type=Path,
        help="write the key alone to this file (mode 0640) instead of printing it; if the file exists, keep it "
        "and create nothing (a provisioning step can run again)",
    )
    export = commands.add_parser(
        "export", help="save a dataset to a file through the API (LABELLOOP_URL, LABELLOOP_API_KEY)"
    )
    export.add_argument("use_case")
    export.add_argument("--format", choices=["jsonl", "csv", "parquet"], default="jsonl")
    export.add_argument("-o", "--output", type=Path, required=True, help="the file (replaced once complete)")
    export.add_argument("--since", type=int, default=0, help="only rows changed after this seq")
    export.add_argument("--final-only", action="store_true", help="only labels that can no longer change")
    export.add_argument("--url", help="default: LABELLOOP_URL (http://127.0.0.1:8000)")
    advise = commands.add_parser("advise", help="the window a use case needs for a target fake-negative rate")
    advise.add_argument("use_case")
    advise.add_argument("--target", type=float, default=0.02, help="the fake-negative rate to stay under")
    advise.add_argument("--url", help="default: LABELLOOP_URL (http://127.0.0.1:8000)")
    erase = commands.add_parser(
        "erase", help="erase a subject's predictions, events and labels through the API (an admin key)"
    )
    erase.add_argument("subject_id", help="as the apps sent it (a hashed subject is found from its plain id)")
    erase.add_argument("--json", action="store_true", help="print the counts as JSON")
    erase.add_argument("--url", help="default: LABELLOOP_URL (http://127.0.0.1:8000)")
    purge = commands.add_parser(
        "purge", help="delete what the policies' retention let expire (the API also does, hourly)"
    )
    purge.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    relabel = commands.add_parser(
        "relabel", help="recompute a use case's stored labels under the policy file in force (stop `serve` first)"
    )
    relabel.add_argument("use_case")
    relabel.add_argument("--served-from", type=_served_from, help="only predictions served at or after this time")
    relabel.add_argument("--batch", type=_batch, default=1000, help="predictions per transaction (default 1000)")
    relabel.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    relabel.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    key_commands.add_parser("list", help="every key, active and revoked (never a secret)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    simulate = commands.add_parser(
        "simulate",
        help="send realistic traffic (predictions, then their events) to a running service, then compare its figures",
    )
    simulate.add_argument("--scenario", choices=["recsys", "eta", "fraud"], default="recsys")
    simulate.add_argument("--rate", type=_positive, default=20.0, help="predictions per second (default 20)")
    simulate.add_argument("--duration", type=_positive, default=30.0, help="seconds of serving (default 30)")
    simulate.add_argument(
        "--grace",
        type=_not_negative,
        default=5.0,
        help="seconds after serving stops to send the events due by then; later ones never happen (default 5)",
    )
    simulate.add_argument("--seed", type=int, help="reproduce a run's traffic (default: random, printed)")
    simulate.add_argument("--url", help="default: LABELLOOP_URL (http://127.0.0.1:8000); the key: LABELLOOP_API_KEY")
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    args = parser.parse_args(argv)
    # Clients of a running API: no database, no settings or policies of the server's.
    if args.command == "simulate":
        return _simulate(args)
    if args.command in ("export", "advise", "erase"):
        from service import cli_client

        run = {"export": cli_client.run_export, "advise": cli_client.run_advise, "erase": cli_client.run_erase}
        return run[args.command](args)
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port") and v is not None}
    settings = Settings(**overrides)
    try:
        policies = load_policies(settings.policies)
    except PolicyError as exc:
        print(f"labelloop: {exc}", file=sys.stderr)
        return 2
    if policies.hashes_features and settings.hash_key is None:
        print(f"labelloop: {settings.policies}: features.hash needs LABELLOOP_FEATURE_HASH_KEY", file=sys.stderr)
        return 2
    if args.command == "keys":
        return _keys(settings, args)
    if args.command == "purge":
        return _purge(settings, policies, args.dry_run)
    if args.command == "relabel":
        from service.cli_relabel import run_relabel

        return run_relabel(settings, policies, args)
    command = {"serve": _serve, "migrate": _migrate, "consume": _consume}[args.command]
    return command(settings)


if __name__ == "__main__":
    sys.exit(main())
