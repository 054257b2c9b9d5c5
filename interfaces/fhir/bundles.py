"""The FHIR documents around the resources: search and history Bundles, the OperationOutcome of
an error, and the CapabilityStatement that says exactly what this view supports. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from interfaces.fhir.mapping import Resource

PATH = "/fhir/r4"  # where the FHIR paths are served
FHIR_JSON = "application/fhir+json"

FHIR_VERSION = "4.0.1"
# When the CapabilityStatement last changed (its required `date`).
CAPABILITIES_DATE = "2026-12-01"

# The search parameters of each resource type, with their FHIR types. The search itself also
# takes `_count` (1-500, 50 by default) and `_cursor`, the key its `next` link continues after.
SEARCH_PARAMETERS: Mapping[str, Mapping[str, str]] = {
    "MedicationRequest": {
        "identifier": "token",
        "patient": "reference",
        "status": "token",
        "_lastUpdated": "date",
    },
    "MedicationDispense": {"prescription": "reference"},
}
SEARCH_PARAMETER_DOCS: Mapping[str, str] = {
    "identifier": "the DRx prescription id, as urn:drx:prescription-id|<id> or <id>",
    "patient": "Patient/<id> or <id>",
    "status": "one or more MedicationRequest status codes, comma-separated (any of them)",
    "_lastUpdated": (
        "when the last fact was recorded, with a gt, ge, lt or le prefix, before a date "
        "(YYYY-MM-DD, UTC) or an instant with its offset; twice for a range"
    ),
    "prescription": "the MedicationRequest: MedicationRequest/<id> or <id>",
}
# Each resource type's interactions.
INTERACTIONS: Mapping[str, tuple[str, ...]] = {
    "MedicationRequest": ("read", "vread", "history-instance", "search-type"),
    "MedicationDispense": ("search-type",),
    "Patient": ("read",),
}

# OperationOutcome.issue.code for an error answer's HTTP status.
_ISSUE_CODES: Mapping[int, str] = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    503: "transient",
}


def searchset(
    base: str,
    resources: Sequence[Resource],
    self_url: str,
    next_url: str | None,
    total: int | None,
) -> Resource:
    """A search's page: each resource a match; `next` continues after the last one."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    bundle: Resource = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "match"}}
        for r in resources
    ]
    return bundle


def history(base: str, versions: Sequence[Resource]) -> Resource:
    """An instance's history Bundle from its versions (oldest first), newest first as FHIR
    orders them: version 1 was a create, each later one an update."""
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(versions),
        "entry": [_history_entry(base, version) for version in reversed(versions)],
    }


def _history_entry(base: str, resource: Resource) -> Resource:
    kind, meta = resource["resourceType"], resource["meta"]
    created = meta["versionId"] == "1"
    return {
        "fullUrl": full_url(base, resource),
        "resource": resource,
        "request": {
            "method": "POST" if created else "PUT",
            "url": kind if created else f"{kind}/{resource['id']}",
        },
        "response": {
            "status": "201 Created" if created else "200 OK",
            "etag": f'W/"{meta["versionId"]}"',
            "lastModified": meta["lastUpdated"],
        },
    }


def full_url(base: str, resource: Resource) -> str:
    return f"{base}/{resource['resourceType']}/{resource['id']}"


def operation_outcome(status: int, detail: str, problems: Sequence[str] = ()) -> Resource:
    """An error answer: one issue, or one per problem named."""
    code = _ISSUE_CODES.get(status, "exception" if status >= 500 else "processing")
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": code, "diagnostics": text}
            for text in (problems or [detail])
        ],
    }


def capability_statement(base: str, software_version: str) -> Resource:
    """What this server does, and nothing more: JSON only, reads, one instance history and the
    searches of SEARCH_PARAMETERS, each behind an API key with the `read` scope."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITIES_DATE,
        "publisher": "DRx prescription service",
        "kind": "instance",
        "software": {"name": "drx-service", "version": software_version},
        "implementation": {
            "description": "DRx prescriptions as FHIR R4, read-only",
            "url": base,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {"description": "Authorization: Bearer <API key> with the read scope"},
                "resource": [_resource_capabilities(kind) for kind in INTERACTIONS],
            }
        ],
    }


def _resource_capabilities(kind: str) -> Resource:
    capabilities: dict[str, Any] = {
        "type": kind,
        "interaction": [{"code": code} for code in INTERACTIONS[kind]],
    }
    if "history-instance" in INTERACTIONS[kind]:
        capabilities["versioning"] = "versioned"
        capabilities["readHistory"] = True  # vread: /MedicationRequest/{id}/_history/{vid}
    parameters = SEARCH_PARAMETERS.get(kind, {})
    if parameters:
        capabilities["searchParam"] = [
            {"name": name, "type": type_, "documentation": SEARCH_PARAMETER_DOCS[name]}
            for name, type_ in parameters.items()
        ]
    return capabilities
