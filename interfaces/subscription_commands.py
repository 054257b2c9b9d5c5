"""`drx subscriptions ...`: register, list, show, pause, resume, rewind and remove the internal
apps' endpoints, directly in the store (a running dispatcher takes a change up within a
second)."""

from __future__ import annotations

import argparse
from typing import Any

from domain.names import CHANGE_TYPES, STATUSES
from infrastructure.settings import Settings
from infrastructure.subscriptions import (
    ACTIVE,
    PAUSED,
    Subscription,
    SubscriptionError,
    SubscriptionNotFoundError,
)
from interfaces.bootstrap import Parts, bootstrap

COMMANDS: list[tuple[str, str]] = [
    ("subscriptions add", "register an endpoint for changes; prints its id and secret once"),
    ("subscriptions list", "every subscription: state, position, lag, last attempt"),
    ("subscriptions show", "one subscription, with its latest attempts"),
    ("subscriptions pause", "stop sending to it; it keeps its position"),
    ("subscriptions resume", "send again from its position (a disabled one too)"),
    ("subscriptions rewind", "send again every matching change after --after POSITION"),
    ("subscriptions remove", "remove it and its attempts log"),
]


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)} is not {what}: {', '.join(known)}")
    return chosen


def _types(text: str) -> list[str]:
    return _names(text, CHANGE_TYPES, "a change type")


def _statuses(text: str) -> list[str]:
    return _names(text, STATUSES, "a status")


def _position(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not a position (0 or more)")
    return int(text)


def _line(parts: Parts, subscription: Subscription) -> str:
    store = parts.subscriptions
    last = store.last_attempt(subscription.id)
    tried = f"last attempt {last.at} {last.status or last.error}" if last else "no attempt yet"
    filters = ",".join(subscription.types) or "all types"
    if subscription.statuses:
        filters += " / " + ",".join(subscription.statuses)
    why = f" ({subscription.disabled_reason})" if subscription.disabled_reason else ""
    return (
        f"{subscription.id}  {subscription.state}{why}  {subscription.url}  [{filters}]  "
        f"position {subscription.position}, lag {store.lag(subscription)}, {tried}"
    )


def cmd_add(parts: Parts, args: argparse.Namespace) -> None:
    subscription, secret = parts.subscriptions.create(
        args.url, args.types or [], args.statuses or [], args.description
    )
    print(f"id      {subscription.id}")
    print(f"secret  {secret}")
    print(
        "The secret is shown only now: give it to the endpoint, which checks each POST's "
        f"Standard Webhooks signature with it. It gets changes after position "
        f"{subscription.position} (now); rewind it for earlier ones."
    )


def cmd_list(parts: Parts, _: argparse.Namespace) -> None:
    found = parts.subscriptions.all()
    for subscription in found:
        print(_line(parts, subscription))
    print(f"{len(found)} subscription(s)")


def cmd_show(parts: Parts, args: argparse.Namespace) -> None:
    store = parts.subscriptions
    print(_line(parts, store.get(args.id)))
    for attempt in store.attempts(args.id, 10, None):
        outcome = attempt.status if attempt.error is None else attempt.error
        print(f"  {attempt.at}  position {attempt.position}  {outcome}  {attempt.duration_ms} ms")


def cmd_pause(parts: Parts, args: argparse.Namespace) -> None:
    print(_line(parts, parts.subscriptions.set_state(args.id, PAUSED)))


def cmd_resume(parts: Parts, args: argparse.Namespace) -> None:
    print(_line(parts, parts.subscriptions.set_state(args.id, ACTIVE)))


def cmd_rewind(parts: Parts, args: argparse.Namespace) -> None:
    print(_line(parts, parts.subscriptions.rewind(args.id, args.after)))


def cmd_remove(parts: Parts, args: argparse.Namespace) -> None:
    parts.subscriptions.remove(args.id)
    print(f"{args.id} removed")


def run(settings: Settings, args: argparse.Namespace, usage_error: type[Exception]) -> int:
    with bootstrap(settings) as parts:
        try:
            args.subscriptions_handler(parts, args)
        except SubscriptionNotFoundError:
            raise usage_error(f"no subscription with id {args.id}") from None
        except SubscriptionError as error:
            raise usage_error(str(error)) from None
    return 0


def add_parser(commands: Any, handler: Any) -> None:
    """`drx subscriptions ...` on the CLI's parser; `handler` runs the chosen one."""
    subscriptions = commands.add_parser(
        "subscriptions", help="internal apps' endpoints for the change feed"
    ).add_subparsers(dest="subscriptions_command", required=True, metavar="SUBCOMMAND")
    helps = dict(COMMANDS)
    add = subscriptions.add_parser("add", help=helps["subscriptions add"])
    add.add_argument("url")
    add.add_argument("--types", type=_types, help="change types, comma-separated (default all)")
    add.add_argument("--statuses", type=_statuses, help="statuses after the change (default all)")
    add.add_argument("--description")
    add.set_defaults(subscriptions_handler=cmd_add)
    subscriptions.add_parser("list", help=helps["subscriptions list"]).set_defaults(
        subscriptions_handler=cmd_list
    )
    for name, command in (
        ("show", cmd_show),
        ("pause", cmd_pause),
        ("resume", cmd_resume),
        ("remove", cmd_remove),
    ):
        one = subscriptions.add_parser(name, help=helps[f"subscriptions {name}"])
        one.add_argument("id")
        one.set_defaults(subscriptions_handler=command)
    rewind = subscriptions.add_parser("rewind", help=helps["subscriptions rewind"])
    rewind.add_argument("id")
    rewind.add_argument("--after", type=_position, required=True, metavar="POSITION")
    rewind.set_defaults(subscriptions_handler=cmd_rewind)
    for parser in subscriptions.choices.values():
        parser.set_defaults(handler=handler)
