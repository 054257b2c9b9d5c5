"""The FHIR R4 view: the prescriptions as MedicationRequest, MedicationDispense and Patient
resources (the anti-corruption layer out: FHIR's words stop here)."""
