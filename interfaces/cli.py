"""The `drx` command line: serve, migrate, and send a signed payload for trying the service out."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from domain.errors import PrescriptionNotFoundError
from infrastructure import dead_letters
from infrastructure.audit import Auditor, export_prescription
from infrastructure.database import postgres_warnings
from infrastructure.dev_credentials import read_dev_credentials, with_credentials
from infrastructure.eventstore import StoreKeyError, check_store_readable, open_prescriptions
from infrastructure.migrations import MigrationError, migrate
from infrastructure.projections import projection_runner
from infrastructure.readstore import open_read_database
from infrastructure.rebuild import PROJECTION_NAMES, Rebuilder
from infrastructure.settings import Settings, SettingsError
from interfaces import projector as projector_process
from interfaces.drx.signature import SecretError
from interfaces.http import server
from interfaces.http.app import build_services, create_app
from interfaces.logs import configure_logging
from interfaces.progress import Progress
from interfaces.runtime import tune_for_serving
from interfaces.simulator import simulate

log = logging.getLogger("drx")


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    applied = migrate(settings)  # logs each migration it applies
    print(f"{settings.describe_database()}: {len(applied)} migration(s) applied, up to date")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    settings, notes = with_credentials(settings)
    for note in notes:
        log.warning(note)
    migrate(settings)  # logs each migration it applies
    check_store_readable(settings)
    for warning in postgres_warnings(settings):
        log.warning(warning)
    # The projections run in a process of their own (interfaces/projector.py), so that the web
    # workers' time goes to the webhook; both end together.
    projector = projector_process.start(settings)
    try:
        if args.workers > 1:
            # Each worker builds its own app from the environment (interfaces/http/asgi.py).
            log.info(
                "serving on http://%s:%d with %d workers, the store in %s",
                args.host,
                args.port,
                args.workers,
                settings.describe_database(),
            )
            server.run(
                "interfaces.http.asgi:app",
                args.host,
                args.port,
                factory=True,
                workers=args.workers,
            )
            return 0
        app = create_app(settings, run_projections=False)
        tune_for_serving()
        log.info(
            "serving on http://%s:%d with the store in %s",
            args.host,
            args.port,
            settings.describe_database(),
        )
        server.run(app, args.host, args.port)
        return 0
    finally:
        projector_process.stop(projector)


def cmd_projections_run(settings: Settings, _: argparse.Namespace) -> int:
    check_store_readable(settings)
    projector_process.run(settings)
    return 0


def cmd_projections_status(settings: Settings, _: argparse.Namespace) -> int:
    services = build_services(settings)
    try:
        rows = services.projections.status()
    finally:
        services.close()
    print(f"{'projection':<16}{'position':>12}{'head':>12}{'lag':>12}{'dead letters':>14}")
    for row in rows:
        print(f"{row.name:<16}{row.position:>12}{row.head:>12}{row.lag:>12}{row.dead_letters:>14}")
    if any(row.dead_letters for row in rows):
        print(
            "events were set aside: see drx projections dead-letters; once fixed, "
            "drx projections retry"
        )
    return 0


def cmd_projections_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    db = open_read_database(settings)
    try:
        letters = dead_letters.dead_letters(db, args.name)
    finally:
        db.close()
    for letter in letters:
        print(
            f"{letter.projection} event {letter.position} ({letter.topic.rsplit('.', 1)[-1]} of "
            f"{letter.originator_id} v{letter.originator_version}), {letter.attempts} attempt(s), "
            f"since {letter.failed_at}: {letter.reason}"
        )
    print(f"{len(letters)} dead letter(s)")
    return 0


def cmd_projections_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the dead letters again, after a fix; exit 1 when some still fail."""
    app, db = open_prescriptions(settings), open_read_database(settings)
    try:
        results = projection_runner(app, db, settings).retry_dead_letters(args.name)
    finally:
        db.close()
        app.close()
    for result in results:
        print(f"{result.name}: {result.applied} applied, {result.still_dead} still set aside")
    return 1 if any(result.still_dead for result in results) else 0


def cmd_projections_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild each named read model (all by default) and swap it in, or only compare."""
    names = [args.name] if args.name else list(PROJECTION_NAMES)
    app, db = open_prescriptions(settings), open_read_database(settings)
    worst = 0
    try:
        for name in names:
            result = Rebuilder(app, db).rebuild(
                name, verify=args.verify, progress=Progress(f"rebuild {name}")
            )
            rate = result.events / result.seconds if result.seconds else 0
            print(
                f"{name}: {result.events:,} events replayed in {result.seconds:.1f} s "
                f"({rate:,.0f} events/s) into {result.rows:,} rows, at position {result.position}"
            )
            if result.swapped:
                print(f"{name}: the rebuilt model replaced the live one")
            elif result.differences:
                worst = 1
                print(f"{name}: {len(result.differences)} difference(s) from the live model:")
                for d in result.differences:
                    print(f"  {d.key}  {d.field}: live={d.live!r} rebuilt={d.rebuilt!r}")
            else:
                print(f"{name}: the live model equals the rebuilt one, row for row")
    finally:
        db.close()
        app.close()
    return worst


def _audit_secrets(settings: Settings) -> tuple[str, ...]:
    secrets = settings.webhook_secrets or read_dev_credentials(settings).get(
        "DRX_WEBHOOK_SECRETS", ()
    )
    if not secrets:
        raise SettingsError(
            "DRX_WEBHOOK_SECRETS must hold every secret DRx has signed with (retired ones too) "
            "for the audit to re-verify the stored deliveries"
        )
    return tuple(secrets)


def cmd_audit_verify(settings: Settings, _: argparse.Namespace) -> int:
    app = open_prescriptions(settings)
    try:
        report = Auditor(app, _audit_secrets(settings)).verify(Progress("audit"))
    finally:
        app.close()
    summary = (
        f"{report.events:,} events: {report.prescriptions:,} prescriptions, "
        f"{report.facts:,} facts, {report.deliveries:,} deliveries"
    )
    if report.intact:
        print(f"intact: {summary}; every chain holds and every signature verifies")
        return 0
    print(f"NOT INTACT: {len(report.findings)} finding(s) in {summary}")
    for finding in report.findings:
        print(f"  {finding.where}: {finding.what}")
    return 1


def cmd_audit_export(settings: Settings, args: argparse.Namespace) -> int:
    app, db = open_prescriptions(settings), open_read_database(settings)
    try:
        delivery_ids = [
            str(row[0])
            for row in db.query(
                "SELECT event_id FROM rx_deliveries WHERE subject = %s", (args.prescription_id,)
            )
        ]
        document = export_prescription(
            app, _audit_secrets(settings), args.prescription_id, delivery_ids
        )
    except PrescriptionNotFoundError:
        print(f"drx: no prescription with id {args.prescription_id}", file=sys.stderr)
        return 2
    finally:
        db.close()
        app.close()
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    api_key = args.api_key or next(
        iter(settings.api_keys or read_dev_credentials(settings).get("DRX_API_KEYS", ())), None
    )
    return simulate(
        url=args.url,
        secret=args.secret,
        api_key=api_key,
        prescriptions=args.prescriptions,
        rate=args.rate,
        duplicates=args.duplicates,
        shuffle=args.shuffle,
        connections=args.connections,
        seed=args.seed,
    )


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    """Sign each payload file as DRx would and POST it; print each answer."""
    secrets = settings.webhook_secrets or read_dev_credentials(settings).get("DRX_WEBHOOK_SECRETS")
    secret = args.secret or (secrets[0] if secrets else None)
    if not secret:
        print(
            "no secret: pass --secret, set DRX_WEBHOOK_SECRETS, or run drx serve once",
            file=sys.stderr,
        )
        return 2
    worst = 0
    for path in args.payloads:
        body = Path(path).read_bytes()
        message_id = f"msg_{uuid.uuid4().hex}"
        signature = Webhook(secret).sign(message_id, datetime.now(UTC), body.decode("utf-8"))
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own
            args.url,
            data=body,
            method="POST",
            headers={
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": signature,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        print(f"{path}: {status} {text}")
        worst = max(worst, 0 if 200 <= status < 300 else 1)
    return worst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drx", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply pending migrations, then run the web service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="web processes on the one port (default 1); the projections run in one more",
    )
    serve.set_defaults(handler=cmd_serve)

    commands.add_parser("migrate", help="apply pending migrations, each once").set_defaults(
        handler=cmd_migrate
    )

    projections = commands.add_parser("projections", help="the read models").add_subparsers(
        dest="projections_command", required=True
    )
    projections.add_parser(
        "status", help="each projection's position, the store's head, and the lag"
    ).set_defaults(handler=cmd_projections_status)
    projections.add_parser(
        "run", help="run the projections in the foreground (drx serve runs them itself)"
    ).set_defaults(handler=cmd_projections_run)
    letters = projections.add_parser(
        "dead-letters", help="the events a projection set aside, with why"
    )
    letters.add_argument("name", nargs="?", choices=PROJECTION_NAMES)
    letters.set_defaults(handler=cmd_projections_dead_letters)
    retry = projections.add_parser(
        "retry", help="apply the dead letters again after a fix; exit 1 if some still fail"
    )
    retry.add_argument("name", nargs="?", choices=PROJECTION_NAMES)
    retry.set_defaults(handler=cmd_projections_retry)
    rebuild = projections.add_parser(
        "rebuild", help="rebuild read models from the start of the event store, then swap them in"
    )
    rebuild.add_argument("name", nargs="?", choices=PROJECTION_NAMES)
    rebuild.add_argument(
        "--verify",
        action="store_true",
        help="compare with the live model instead of swapping; exit 1 on any difference",
    )
    rebuild.set_defaults(handler=cmd_projections_rebuild)

    audit = commands.add_parser("audit", help="the stored history's integrity").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser(
        "verify",
        help="check every fact's chain and every delivery's signature; exit 1 if not intact",
    ).set_defaults(handler=cmd_audit_verify)
    export = audit.add_parser("export", help="one prescription's audit document, as JSON")
    export.add_argument("prescription_id")
    export.set_defaults(handler=cmd_audit_export)

    sim = commands.add_parser("simulate", help="a DRx stand-in: send signed lifecycles")
    sim.add_argument(
        "--url", required=True, help="the webhook, e.g. http://127.0.0.1:8000/webhooks/drx"
    )
    sim.add_argument("--secret", required=True, help="the whsec_... secret to sign with")
    sim.add_argument("--prescriptions", type=int, default=100)
    sim.add_argument(
        "--rate", type=float, default=None, help="deliveries per second (default: flat out)"
    )
    sim.add_argument("--duplicates", type=float, default=0.1, help="share sent twice (default 0.1)")
    sim.add_argument("--shuffle", action="store_true", help="shuffle each prescription's events")
    sim.add_argument("--connections", type=int, default=32)
    sim.add_argument("--seed", type=int, default=None, help="repeat a run exactly")
    sim.add_argument("--api-key", help="to check the final states (default: DRX_API_KEYS)")
    sim.set_defaults(handler=cmd_simulate)

    send = commands.add_parser("send", help="sign payload files as DRx would and POST them")
    send.add_argument("payloads", nargs="+", metavar="PAYLOAD.json")
    send.add_argument("--url", default="http://127.0.0.1:8000/webhooks/drx")
    send.add_argument("--secret", help="whsec_... (default: DRX_WEBHOOK_SECRETS or the dev secret)")
    send.set_defaults(handler=cmd_send)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        return int(args.handler(settings, args))
    except (SettingsError, SecretError, MigrationError, StoreKeyError) as error:
        print(f"drx: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
