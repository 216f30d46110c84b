"""`labelloop serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from service.config import Settings
from service.core.policy import PolicyError, load_policies


def _serve(settings: Settings) -> int:
    import uvicorn

    from service.api.app import create_app

    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


def _migrate(settings: Settings) -> int:
    from service.store import migrate
    from service.store.database import create_engine

    async def run() -> None:
        engine = create_engine(settings.database_url, application_name="labelloop-migrate")
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"migrated {settings.database_url.split('@')[-1]} to head")
    return 0


def _consume(settings: Settings) -> int:
    from consumers.main import consume

    if not settings.kafka_mode:
        print("labelloop consume: set LABELLOOP_KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(consume(settings))
    return 0


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
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port") and v is not None}
    settings = Settings(**overrides)
    try:
        load_policies(settings.policies)
    except PolicyError as exc:
        print(f"labelloop: {exc}", file=sys.stderr)
        return 2
    command = {"serve": _serve, "migrate": _migrate, "consume": _consume}[args.command]
    return command(settings)


if __name__ == "__main__":
    sys.exit(main())
