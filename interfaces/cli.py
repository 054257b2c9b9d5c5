"""The `drx` command line.

Every command gets the service's parts from the one bootstrap (`interfaces.bootstrap`); only
`drx serve` and `drx migrate` create a store. A mistake (a setting, a store that is not there,
a file, a secret, a server that does not answer) is one line on standard error, never a
traceback, and the exit code says what happened:

    0  done (and, for the checking commands, everything checked holds)
    1  done, and something checked does not hold: a difference (`rebuild --verify`), a finding
       (`audit verify`), a dead letter that still fails (`projections retry`), a delivery not
       acknowledged (`send`, `simulate`), a state that differs (`simulate`)
    2  not done: the command, a setting or the store is wrong; the line says what to fix
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from domain.errors import PrescriptionNotFoundError
from domain.seals import Checkpoint, CheckpointFormatError, read_checkpoint
from infrastructure import dead_letters
from infrastructure.dev_credentials import read_dev_credentials
from infrastructure.eventstore import StoreKeyError, check_store_readable
from infrastructure.migrations import MigrationError, StoreNotReadyError, migrate
from infrastructure.rebuild import PROJECTION_NAMES, Difference, RebuildError
from infrastructure.seals import SealReport
from infrastructure.settings import Settings, SettingsError, configured_keys
from interfaces import (
    access_commands,
    key_commands,
    projector_process,
    server,
    subscription_commands,
)
from interfaces.bootstrap import Parts, bootstrap
from interfaces.documents import export_prescription
from interfaces.drx.signature import SecretError, secret_key, signed_headers
from interfaces.logs import configure_logging, escape_controls
from interfaces.progress import Progress
from interfaces.simulator import SimulationError, simulate

log = logging.getLogger("drx")

DONE, NOT_HOLDING, NOT_DONE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how a command was called: the message is the one line to show."""


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    server.serve(settings, args.host, args.port, args.workers)
    return DONE


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    applied = migrate(settings)  # logs each migration it applies
    print(f"{settings.describe_database()}: {len(applied)} migration(s) applied, up to date")
    return DONE


def cmd_projections_status(settings: Settings, _: argparse.Namespace) -> int:
    with bootstrap(settings) as parts:
        rows = parts.projector.status()
    print(f"{'projection':<16}{'position':>12}{'head':>12}{'lag':>12}{'dead letters':>14}")
    for row in rows:
        print(f"{row.name:<16}{row.position:>12}{row.head:>12}{row.lag:>12}{row.dead_letters:>14}")
    if any(row.dead_letters for row in rows):
        print(
            "events were set aside: see drx projections dead-letters; once fixed, "
            "drx projections retry"
        )
    return DONE


def cmd_projections_run(settings: Settings, _: argparse.Namespace) -> int:
    check_store_readable(settings)
    projector_process.run(settings)
    return DONE


def cmd_projections_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    with bootstrap(settings) as parts:
        letters = dead_letters.dead_letters(parts.read_db, args.name)
    for letter in letters:
        print(
            escape_controls(
                f"{letter.projection} event {letter.position} ({letter.topic.rsplit('.', 1)[-1]} "
                f"of {letter.originator_id} v{letter.originator_version}), {letter.attempts} "
                f"attempt(s), since {letter.failed_at}: {letter.reason}"
            )
        )
    print(f"{len(letters)} dead letter(s)")
    return DONE


def cmd_projections_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the dead letters again, after a fix; exit 1 when some still fail."""
    with bootstrap(settings) as parts:
        results = parts.projector.retry_dead_letters(args.name)
    for result in results:
        print(f"{result.name}: {result.applied} applied, {result.still_dead} still set aside")
    return NOT_HOLDING if any(result.still_dead for result in results) else DONE


def cmd_projections_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild each named read model (all by default) and swap it in, or only compare."""
    names = [args.name] if args.name else list(PROJECTION_NAMES)
    worst = DONE
    check_store_readable(settings)
    with bootstrap(settings) as parts:
        for name in names:
            result = parts.rebuilder.rebuild(
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
                worst = NOT_HOLDING
                print(f"{name}: {len(result.differences)} difference(s) from the live model:")
                _print_differences(parts, result.differences)
            else:
                print(f"{name}: the live model equals the rebuilt one, row for row")
    return worst


def _print_differences(parts: Parts, differences: list[Difference]) -> None:
    """Each difference with its two values, which are patient data: the access log's entry
    naming whom they are about is written first, and without it only the rows and fields
    that differ are shown."""
    try:
        access_commands.record_differences(parts, "drx projections rebuild --verify", differences)
    except access_commands.AccessNotRecordedError as error:
        print(f"  (the values are not shown: {error})")
        for d in differences:
            print(escape_controls(f"  {d.key}  {d.field}"))
        return
    for d in differences:
        print(escape_controls(f"  {d.key}  {d.field}: live={d.live!r} rebuilt={d.rebuilt!r}"))


def _with_audit_secrets(settings: Settings) -> Settings:
    secrets = settings.webhook_secrets or read_dev_credentials(settings).get(
        "DRX_WEBHOOK_SECRETS", ()
    )
    if not secrets:
        raise SettingsError(
            "DRX_WEBHOOK_SECRETS must hold every secret DRx has signed with (retired ones too) "
            "for the audit to re-verify the stored deliveries"
        )
    return dataclasses.replace(settings, webhook_secrets=tuple(secrets))


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    """The facts' chains and the deliveries' signatures, then the seals and the checkpoints
    (the stored ones and each `--checkpoint FILE`); exit 1 on any finding."""
    files = [(path, _read_checkpoint(path)) for path in args.checkpoint]
    check_store_readable(settings)  # first: no store, or the wrong key, is the line to show
    settings = _with_audit_secrets(settings)  # a wrong key is one line, not a finding per event
    with bootstrap(settings) as parts:
        report = parts.auditor.verify(Progress("audit"), lambda: Progress("snapshots"))
        seals = parts.seal_verifier.verify(files, Progress("seals"))
    summary = (
        f"{report.events:,} events: {report.prescriptions:,} prescriptions, "
        f"{report.facts:,} facts, {report.deliveries:,} deliveries, "
        f"{report.snapshots:,} snapshots"
    )
    findings = [*report.findings, *seals.findings]
    if findings:
        print(f"NOT INTACT: {len(findings)} finding(s) in {summary}")
        for finding in findings:  # escaped: an edited row's text is anyone's
            print(escape_controls(f"  {finding.where}: {finding.what}"))
    else:
        print(
            f"intact: {summary}; every chain holds and every signature verifies, every snapshot "
            "is what its facts give, every seal and checkpoint holds"
        )
    print(_seals_summary(seals))
    return NOT_HOLDING if findings else DONE


def _seals_summary(seals: SealReport) -> str:
    events, access = seals.sequences["events"], seals.sequences["access"]
    unsigned = f", {len(seals.unsigned)} of them unsigned" if seals.unsigned else ""
    return (
        f"seals: {events.sealed:,} events sealed ({events.unsealed:,} not yet), "
        f"{access.sealed:,} access-log rows ({access.unsealed:,} not yet); "
        f"{seals.checkpoints:,} checkpoint(s) checked{unsigned}"
    )


def _read_checkpoint(path: str) -> Checkpoint:
    try:
        return read_checkpoint(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except (CheckpointFormatError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not an audit checkpoint: {error}") from None


def cmd_audit_checkpoint(settings: Settings, args: argparse.Namespace) -> int:
    """Seal the store up to its head now; print (and store, and with `--output` write) the
    checkpoint."""
    with bootstrap(settings) as parts:
        checkpoint = parts.sealer.checkpoint()
    text = json.dumps(checkpoint.document(), indent=2)
    if args.output:
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(
                f"cannot write {args.output}: {error.strerror} (the checkpoint is stored all "
                "the same: drx audit checkpoint again writes a new one)"
            ) from None
    print(text)
    if checkpoint.signature is None:
        print(
            "drx: the checkpoint is unsigned: set DRX_AUDIT_SIGNING_KEY (the base64 of a 32-byte "
            "seed) to sign checkpoints",
            file=sys.stderr,
        )
    return DONE


def cmd_audit_export(settings: Settings, args: argparse.Namespace) -> int:
    check_store_readable(settings)  # first: no store, or the wrong key, is the line to show
    settings = _with_audit_secrets(settings)
    with bootstrap(settings) as parts:
        try:
            document = export_prescription(
                parts.prescriptions,
                parts.verifier,
                args.prescription_id,
                parts.queries.delivery_ids_of(args.prescription_id),
            )
        except PrescriptionNotFoundError:
            raise UsageError(f"no prescription with id {args.prescription_id}") from None
        try:
            access_commands.record_command(parts, "drx audit export", 200, document)
        except access_commands.AccessNotRecordedError as error:
            raise UsageError(str(error)) from None
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return DONE


def cmd_audit_access(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return access_commands.run(settings, args)
    except access_commands.AccessNotRecordedError as error:
        raise UsageError(str(error)) from None


def _secret(settings: Settings, given: str | None) -> str:
    """--secret, else DRX_WEBHOOK_SECRETS, else the development secret `drx serve` made."""
    secrets = settings.webhook_secrets or read_dev_credentials(settings).get(
        "DRX_WEBHOOK_SECRETS", ()
    )
    secret = given or (secrets[0] if secrets else None)
    if not secret:
        raise UsageError("no secret: pass --secret, set DRX_WEBHOOK_SECRETS, or run drx serve once")
    try:
        secret_key(secret)
    except SecretError:
        raise UsageError("--secret is not a whsec_<base64> secret") from None
    return secret


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    entries = settings.api_keys or read_dev_credentials(settings).get("DRX_API_KEYS", ())
    readers = (k.key for k in configured_keys(entries) if "read" in k.scopes)
    api_key = args.api_key or next(readers, None)
    return simulate(
        url=args.url,
        secret=_secret(settings, args.secret),
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
    secret = _secret(settings, args.secret)
    bodies = []
    for path in args.payloads:
        try:
            bodies.append((path, Path(path).read_bytes()))
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}") from None
    worst = DONE
    for path, body in bodies:
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own
            args.url,
            data=body,
            method="POST",
            headers=signed_headers(secret, f"msg_{uuid.uuid4().hex}", body),
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise UsageError(
                f"nothing answers at {args.url} ({reason}): is drx serve running there?"
            ) from None
        if status == 401:  # every file would be refused alike: it is the secret
            raise UsageError(
                f"{args.url} refused the signature of {path} (401): --secret (or "
                "DRX_WEBHOOK_SECRETS) is not a secret that server accepts"
            )
        print(f"{path}: {status} {text}")
        worst = max(worst, DONE if 200 <= status < 300 else NOT_HOLDING)
    return worst


def cmd_subscriptions(settings: Settings, args: argparse.Namespace) -> int:
    return subscription_commands.run(settings, args, UsageError)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    return key_commands.run(settings, args, UsageError)


COMMANDS: list[tuple[str, str]] = [
    ("serve", "apply pending migrations, then run the web service and the projections"),
    ("migrate", "apply pending migrations, each once"),
    ("projections status", "each projection's position, the store's head, lag, dead letters"),
    ("projections run", "run the projections in the foreground (drx serve runs them itself)"),
    ("projections rebuild", "rebuild read models from the store, then swap them in (--verify)"),
    ("projections dead-letters", "the events a projection set aside, with why"),
    ("projections retry", "apply the dead letters again after a fix"),
    ("audit verify", "check every fact's chain and signature, the seals, the checkpoints"),
    ("audit export", "one prescription's audit document, as JSON"),
    ("audit checkpoint", "seal the store now and print the signed checkpoint (--output FILE)"),
    ("send", "sign payload files as DRx would and POST them"),
    ("simulate", "a DRx stand-in: send signed lifecycles"),
    *subscription_commands.COMMANDS,
    *key_commands.COMMANDS,
    ("audit access", access_commands.HELP),
]


def build_parser() -> argparse.ArgumentParser:
    listed = "\n".join(f"  drx {name:<26}{what}" for name, what in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="drx",
        description="The DRx prescription service: webhook intake, read API, projections, audit.",
        epilog=f"commands:\n{listed}\n\nexit codes: 0 done; 1 something checked does not hold;"
        " 2 not done (the line says what to fix)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help=COMMANDS[0][1])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        default=1,
        help="web processes on the one port (default 1); the projections run in one more",
    )
    serve.set_defaults(handler=cmd_serve)
    commands.add_parser("migrate", help=COMMANDS[1][1]).set_defaults(handler=cmd_migrate)

    projections = commands.add_parser("projections", help="the read models").add_subparsers(
        dest="projections_command", required=True, metavar="SUBCOMMAND"
    )
    projections.add_parser("status", help=COMMANDS[2][1]).set_defaults(
        handler=cmd_projections_status
    )
    projections.add_parser("run", help=COMMANDS[3][1]).set_defaults(handler=cmd_projections_run)
    rebuild = projections.add_parser("rebuild", help=COMMANDS[4][1])
    rebuild.add_argument("name", nargs="?", choices=PROJECTION_NAMES)
    rebuild.add_argument(
        "--verify",
        action="store_true",
        help="compare with the live model instead of swapping; exit 1 on any difference",
    )
    rebuild.set_defaults(handler=cmd_projections_rebuild)
    letters = projections.add_parser("dead-letters", help=COMMANDS[5][1])
    letters.add_argument("name", nargs="?", choices=PROJECTION_NAMES)
    letters.set_defaults(handler=cmd_projections_dead_letters)
    retry = projections.add_parser("retry", help=COMMANDS[6][1])
    retry.add_argument("name", nargs="?", choices=PROJECTION_NAMES)
    retry.set_defaults(handler=cmd_projections_retry)

    _add_audit(commands)

    send = commands.add_parser("send", help=COMMANDS[10][1])
    send.add_argument("payloads", nargs="+", metavar="PAYLOAD.json")
    send.add_argument("--url", default="http://127.0.0.1:8000/webhooks/drx")
    send.add_argument("--secret", help="whsec_... (default: DRX_WEBHOOK_SECRETS or the dev secret)")
    send.set_defaults(handler=cmd_send)

    sim = commands.add_parser("simulate", help=COMMANDS[11][1])
    sim.add_argument(
        "--url",
        default="http://127.0.0.1:8000/webhooks/drx",
        help="the webhook (default http://127.0.0.1:8000/webhooks/drx)",
    )
    sim.add_argument("--secret", help="whsec_... (default: DRX_WEBHOOK_SECRETS or the dev secret)")
    sim.add_argument(
        "--prescriptions", type=_at_least_one, default=100, help="how many (default 100)"
    )
    sim.add_argument(
        "--rate", type=_positive, default=None, help="deliveries per second (default: flat out)"
    )
    sim.add_argument(
        "--duplicates", type=_share, default=0.1, help="share sent twice, 0 to 1 (default 0.1)"
    )
    sim.add_argument("--shuffle", action="store_true", help="shuffle each prescription's events")
    sim.add_argument(
        "--connections", type=_at_least_one, default=32, help="keep-alive connections (default 32)"
    )
    sim.add_argument("--seed", type=int, default=None, help="repeat a run exactly")
    sim.add_argument("--api-key", help="to check the final states (default: DRX_API_KEYS)")
    sim.set_defaults(handler=cmd_simulate)
    subscription_commands.add_parser(commands, cmd_subscriptions)
    key_commands.add_parser(commands, cmd_keys)
    return parser


def _add_audit(commands: Any) -> None:
    """`drx audit ...`: verify, export, checkpoint, access."""
    audit = commands.add_parser("audit", help="the stored history's integrity").add_subparsers(
        dest="audit_command", required=True, metavar="SUBCOMMAND"
    )
    verify = audit.add_parser("verify", help=COMMANDS[7][1])
    verify.add_argument(
        "--checkpoint",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="a checkpoint kept outside the database (drx audit checkpoint --output): check the "
        "store against it too",
    )
    verify.set_defaults(handler=cmd_audit_verify)
    export = audit.add_parser("export", help=COMMANDS[8][1])
    export.add_argument("prescription_id")
    export.set_defaults(handler=cmd_audit_export)
    access_commands.add_parser(audit, cmd_audit_access)
    checkpoint = audit.add_parser("checkpoint", help=COMMANDS[9][1])
    checkpoint.add_argument("--output", metavar="FILE", help="write the checkpoint there too")
    checkpoint.set_defaults(handler=cmd_audit_checkpoint)


def _number(text: str, kind: type[int] | type[float], low: float, high: float, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is not {what}")
    return value


def _at_least_one(text: str) -> int:
    return int(_number(text, int, 1, 10**9, "a whole number of at least 1"))


def _port(text: str) -> int:
    return int(_number(text, int, 0, 65535, "a port (0 to 65535)"))


def _positive(text: str) -> float:
    return float(_number(text, float, 1e-9, 1e9, "a number above 0"))


def _share(text: str) -> float:
    return float(_number(text, float, 0, 1, "a share from 0 to 1"))


# What a user can get wrong, each answered with its one line (exit 2).
MISTAKES: tuple[type[Exception], ...] = (
    UsageError,
    SettingsError,
    SecretError,
    MigrationError,
    StoreKeyError,
    StoreNotReadyError,
    RebuildError,
    SimulationError,
    server.PortInUseError,
)


def _readable(argv: Sequence[str]) -> None:
    """Every argument as UTF-8 text: bytes that are not (Python keeps them as lone
    surrogates) would fail deep in a command, in the database's driver, as a traceback."""
    for argument in argv:
        try:
            argument.encode()
        except UnicodeEncodeError:
            shown = argument.encode(errors="backslashreplace").decode()
            print(f"drx: an argument is not UTF-8 text: {shown}", file=sys.stderr)
            raise SystemExit(NOT_DONE) from None


def main(argv: Sequence[str] | None = None) -> int:
    _readable(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    configure_logging()
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return int(handler(Settings.from_env(), args))
    except MISTAKES as error:
        print(f"drx: {error}", file=sys.stderr)
        return NOT_DONE
    except KeyboardInterrupt:
        return NOT_DONE
    except BrokenPipeError:  # `drx ... | head`: the reader had enough; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return DONE


if __name__ == "__main__":
    sys.exit(main())
