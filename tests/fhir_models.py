"""The FHIR checks the tests hold the service's resources to: fhir.resources' R4B models (FHIR
4.3.0, the nearest to R4 it ships: R4B changed none of the elements these resources use, where R5
reshaped MedicationRequest and MedicationDispense), which check every element's name, type,
cardinality and id pattern, but not codes: the statuses are held to R4's value sets here."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

# R4's required value sets of the status elements.
MEDICATION_REQUEST_STATUSES = {
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
}
MEDICATION_DISPENSE_STATUSES = {
    "preparation",
    "in-progress",
    "cancelled",
    "on-hold",
    "completed",
    "entered-in-error",
    "stopped",
    "declined",
    "unknown",
}


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource, once its R4B model has read it (a Bundle's entries with it), and its status
    is one of R4's codes; raises what the model or the value set says is wrong."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    for found in (resource, *(e["resource"] for e in resource.get("entry", []))):
        if found["resourceType"] == "MedicationRequest":
            assert found["status"] in MEDICATION_REQUEST_STATUSES, found["status"]
        if found["resourceType"] == "MedicationDispense":
            assert found["status"] in MEDICATION_DISPENSE_STATUSES, found["status"]
    return resource
