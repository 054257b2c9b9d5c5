"""Each background process of `drx serve` holds the code of its own parts only: the dispatcher's
builds none of the domain's models, so it loads no pydantic or eventsourcing code (39 MiB
against 53 measured; issue 18's memory, bench/RESULTS.md). The projector's, which folds the
models, is the check's counterpart: the same probe finds them there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infrastructure.migrations import migrate
from tests.conftest import sqlite_settings

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("eventsourcing", "litestar", "pydantic")

PROBE = f"""
import json, sys
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap
import interfaces.projector_process
with bootstrap(Settings.from_env()) as parts:
    getattr(parts, sys.argv[1])  # built, not started
    print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


# After `load_every_part`, as a web worker calls it before its freeze: building the parts
# imports no more of the service's or its libraries' code.
PRELOADED = """
import json, sys
from infrastructure.settings import Settings
from interfaces.bootstrap import bootstrap, load_every_part
load_every_part()
before = set(sys.modules)
with bootstrap(Settings.from_env()) as parts:
    for name in sys.argv[1:]:
        getattr(parts, name)
    print(json.dumps(sorted({m.split(".")[0] for m in set(sys.modules) - before})))
"""
OURS = ("domain", "infrastructure", "interfaces")
PARTS = ("prescriptions", "queries", "projector", "committer", "auditor", "rebuilder")


def probe(tmp_path: Path, code: str, *args: str) -> list[str]:
    settings = sqlite_settings(tmp_path)
    migrate(settings)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DRX_DATABASE_URL": settings.database_url,
        "DRX_WEBHOOK_SECRETS": ",".join(settings.webhook_secrets),
        "DRX_API_KEYS": ",".join(settings.api_keys),
    }
    found = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(found.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    ("role", "loaded"), [("dispatcher", []), ("projector", ["eventsourcing", "pydantic"])]
)
def test_a_background_process_loads_only_what_its_role_builds(tmp_path, role, loaded):
    assert probe(tmp_path, PROBE, role) == loaded


def test_after_load_every_part_building_the_parts_imports_nothing_more(tmp_path):
    later = probe(tmp_path, PRELOADED, *PARTS)
    assert set(later) & {*OURS, *HEAVY} == set(), later
