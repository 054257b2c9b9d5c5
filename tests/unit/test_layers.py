"""The layer rule of DESIGN.md: domain/ imports no framework, no driver, no outer layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_DOMAIN = (
    "litestar",
    "psycopg",
    "psycopg_pool",
    "uvicorn",
    "sqlite3",
    "infrastructure",
    "interfaces",
    "standardwebhooks",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def forbidden_imports(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(folder.parent)} imports {name}")
    return found


def test_domain_imports_no_framework_driver_or_outer_layer():
    assert forbidden_imports(ROOT / "domain", FORBIDDEN_IN_DOMAIN) == []


def test_infrastructure_does_not_import_interfaces():
    assert forbidden_imports(ROOT / "infrastructure", ("interfaces", "litestar")) == []


def test_the_check_catches_a_forbidden_import(tmp_path):
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "bad.py").write_text("import os\nfrom litestar import get\n")
    found = forbidden_imports(tmp_path / "domain", FORBIDDEN_IN_DOMAIN)
    assert found == ["domain/bad.py imports litestar"]


@pytest.mark.parametrize("folder", ["domain", "infrastructure", "interfaces", "migrations"])
def test_every_module_opens_with_a_docstring(folder):
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / folder).rglob("*.py"))
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert missing == []


def test_the_command_line_reaches_the_web_app_only_through_the_server():
    """`drx` builds its parts with the bootstrap; only `interfaces/server.py` starts the web
    app, by name, in its workers."""
    offenders = [
        name
        for path in ((ROOT / "interfaces" / "cli.py"), (ROOT / "interfaces" / "server.py"))
        for name in imported_modules(path)
        if name.startswith("interfaces.http")
    ]
    assert offenders == []


def test_only_the_one_bootstrap_builds_the_services_parts():
    """No entry point opens the store, the read database or the projector itself."""
    builders = (
        "open_prescriptions",
        "open_read_database",
        "open_async_read_database",
        "projector_for",
    )
    offenders = [
        f"{path.relative_to(ROOT)} calls {name}"
        for folder in ("interfaces", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "bootstrap.py"
        for name in builders
        if f"{name}(" in path.read_text()
    ]
    assert offenders == []


# In interfaces/fhir/: the mapping and the documents around it.
FHIR_PURE = ("ids.py", "mapping.py", "bundles.py")


def test_the_fhir_mapping_is_pure():
    """The FHIR view's mapping imports the standard library and the domain only: no framework,
    no driver, no I/O (its HTTP paths are `interfaces/fhir/api.py`)."""
    import sys

    offenders = [
        f"{name} in {file}"
        for file in FHIR_PURE
        for name in imported_modules(ROOT / "interfaces" / "fhir" / file)
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] != "domain"
        and not name.startswith("interfaces.fhir.")
    ]
    assert offenders == []


def test_fhirs_vocabulary_stays_in_interfaces_fhir():
    words = ("MedicationRequest", "MedicationDispense", "OperationOutcome", "CapabilityStatement")
    fhir = ROOT / "interfaces" / "fhir"
    offenders = [
        f"{path.relative_to(ROOT)} says {word}"
        for folder in ("domain", "infrastructure", "interfaces")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if fhir not in path.parents
        for word in words
        if word in path.read_text()
    ]
    assert offenders == []
