"""`labelloop serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="labelloop", description="Streaming natural-label collection. Settings: LABELLOOP_* variables."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (and, on SQLite, migrate first)")
    serve.add_argument("--host", help="default: LABELLOOP_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: LABELLOOP_PORT (8000)")
    commands.add_parser("migrate", help="apply database migrations to LABELLOOP_DATABASE_URL")
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port") and v is not None}
    settings = Settings(**overrides)
    try:
        load_policies(settings.policies)
    except PolicyError as exc:
        print(f"labelloop: {exc}", file=sys.stderr)
        return 2
    return _serve(settings) if args.command == "serve" else _migrate(settings)


if __name__ == "__main__":
    sys.exit(main())
