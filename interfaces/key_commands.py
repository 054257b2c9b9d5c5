"""`drx keys create|list|revoke`: API keys kept in the store, beside those of DRX_API_KEYS.

A key is printed once, when made; the store keeps only its SHA-256. Running workers take a new
or revoked key up within a second or two (`infrastructure.api_keys.KeyRing`)."""

from __future__ import annotations

import argparse
from typing import Any

from infrastructure.api_keys import ApiKeyError, parse_scopes
from infrastructure.settings import SCOPES, Settings, configured_keys
from interfaces.bootstrap import Parts, bootstrap

COMMANDS: list[tuple[str, str]] = [
    ("keys create", "make an API key (--scopes read,operate,audit; default read); shown once"),
    ("keys list", "the keys: names, scopes, created, last used; never the keys"),
    ("keys revoke", "refuse a key from now on (running workers within 5 s)"),
]


def _scopes(text: str) -> tuple[str, ...]:
    try:
        return parse_scopes(text)
    except ApiKeyError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_create(parts: Parts, args: argparse.Namespace) -> None:
    if args.name in {k.name for k in configured_keys(parts.settings.api_keys)}:
        raise ApiKeyError(f"DRX_API_KEYS already names a key {args.name}: pick another name")
    key = parts.key_store.create(args.name, args.scopes)
    print(f"name    {args.name}")
    print(f"scopes  {','.join(args.scopes)}")
    print(f"key     {key}")
    print(
        "The key is shown only now (the store keeps its hash): send it as "
        "Authorization: Bearer <key>."
    )


def cmd_list(parts: Parts, _: argparse.Namespace) -> None:
    for key in configured_keys(parts.settings.api_keys):
        scopes = ",".join(s for s in SCOPES if s in key.scopes)
        print(f"{key.name}  {scopes}  from DRX_API_KEYS")
    stored = parts.key_store.listed()
    for found in stored:
        state = f"revoked {found.revoked_at}" if found.revoked_at else "active"
        print(
            f"{found.name}  {','.join(found.scopes)}  created {found.created_at}  "
            f"last used {found.last_used_at or 'never'}  {state}"
        )
    print(f"{len(stored)} stored key(s)")


def cmd_revoke(parts: Parts, args: argparse.Namespace) -> None:
    try:
        parts.key_store.revoke(args.name)
    except ApiKeyError:
        # No stored key of that name (a stored one is revoked even when DRX_API_KEYS also has
        # the name): say where a configured one comes from.
        if any(key.name == args.name for key in configured_keys(parts.settings.api_keys)):
            raise ApiKeyError(
                f"{args.name} comes from DRX_API_KEYS, not the store: remove it there and "
                "restart every drx serve that has it"
            ) from None
        raise
    print(f"{args.name} revoked: refused from now on (by running workers within 5 s)")


def run(settings: Settings, args: argparse.Namespace, usage_error: type[Exception]) -> int:
    with bootstrap(settings) as parts:
        try:
            args.keys_handler(parts, args)
        except ApiKeyError as error:
            raise usage_error(str(error)) from None
    return 0


def add_parser(commands: Any, handler: Any) -> None:
    """`drx keys ...` on the CLI's parser; `handler` runs the chosen one."""
    keys = commands.add_parser("keys", help="API keys and their scopes").add_subparsers(
        dest="keys_command", required=True, metavar="SUBCOMMAND"
    )
    helps = dict(COMMANDS)
    create = keys.add_parser("create", help=helps["keys create"])
    create.add_argument("name")
    create.add_argument("--scopes", type=_scopes, default=("read",), help="default read")
    create.set_defaults(keys_handler=cmd_create)
    keys.add_parser("list", help=helps["keys list"]).set_defaults(keys_handler=cmd_list)
    revoke = keys.add_parser("revoke", help=helps["keys revoke"])
    revoke.add_argument("name")
    revoke.set_defaults(keys_handler=cmd_revoke)
    for parser in keys.choices.values():
        parser.set_defaults(handler=handler)
