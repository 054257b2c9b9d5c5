"""What `pip install .` installs from a clean checkout holds every file the service reads at
run time: the migrations and the API page's assets (read through the package, never from the
repository), and the `drx` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_migrations_the_api_pages_assets_and_the_command(tmp_path):
    # Built from a copy, as from a clean clone, so that the build leaves nothing in the checkout.
    source = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", "*.sqlite3*"
        ),
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "wheels"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("drx_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for dialect in ("postgresql", "sqlite"):
        sql = sorted(p.name for p in (ROOT / "migrations" / dialect).glob("*.sql"))
        assert sql, dialect
        assert {f"migrations/{dialect}/{name}" for name in sql} <= names
    assets = sorted(p.name for p in (ROOT / "interfaces/http/static/swagger-ui").iterdir())
    assert {f"interfaces/http/static/swagger-ui/{name}" for name in assets} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "drx = interfaces.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
