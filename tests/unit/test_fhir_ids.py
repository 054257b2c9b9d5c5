"""FHIR ids from DRx ids: always valid FHIR ids, read back to the DRx id without a lookup, one
id per DRx id (no other spelling is taken)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.ids import prescription_id as aggregate_id_of
from interfaces.fhir.ids import (
    medication_dispense_id,
    medication_request_id,
    patient_fhir_id,
    patient_key,
    prescription_key,
)

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# DRx ids: 1 to 200 characters of any text the store can hold (the envelope's `subject`): not
# U+0000, nor a lone surrogate (no UTF-8 for it, so no aggregate id either).
drx_ids = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=200,
)


@pytest.mark.parametrize(
    ("drx_id", "fhir_id"),
    [
        ("drx_rx_7Q2M9K", "drx-rx-7Q2M9K"),
        ("rx/1", "rx.2F1"),
        ("a-b.c", "a.2Db.2Ec"),
        ("é", ".C3.A9"),
    ],
)
def test_a_drx_id_is_escaped_readably(drx_id, fhir_id):
    assert medication_request_id(drx_id) == fhir_id
    assert prescription_key(fhir_id) == drx_id
    assert patient_fhir_id(drx_id) == fhir_id
    assert patient_key(fhir_id) == drx_id


@given(drx_ids)
def test_every_drx_id_has_a_valid_fhir_id_that_names_it_back(drx_id):
    fhir_id = medication_request_id(drx_id)
    assert FHIR_ID.fullmatch(fhir_id)
    key = prescription_key(fhir_id)
    if fhir_id.startswith(".Z"):  # too long to escape: the aggregate id, which the table holds
        assert key == aggregate_id_of(drx_id)
    else:
        assert key == drx_id


@given(drx_ids)
def test_a_patient_id_has_a_fhir_id_unless_it_is_too_long_to_escape(drx_id):
    fhir_id = patient_fhir_id(drx_id)
    if fhir_id is None:
        assert len(medication_request_id(drx_id)) == 34  # the aggregate form, not a patient's
        return
    assert FHIR_ID.fullmatch(fhir_id)
    assert patient_key(fhir_id) == drx_id


@given(drx_ids, drx_ids)
def test_two_drx_ids_never_share_a_fhir_id(one, other):
    if one != other:
        assert medication_request_id(one) != medication_request_id(other)


@given(drx_ids, st.integers(1, 10**6), drx_ids, st.integers(1, 10**6))
def test_each_fill_has_a_valid_id_of_its_own(one, fill, other, other_fill):
    fhir_id = medication_dispense_id(one, fill)
    assert FHIR_ID.fullmatch(fhir_id)
    if (one, fill) != (other, other_fill):
        assert fhir_id != medication_dispense_id(other, other_fill)


@pytest.mark.parametrize(
    "fhir_id",
    [
        "drx.5Frx",  # `_` spelt as an escape: only `-` stands for it
        "rx.2f1",  # lower-case hex
        "rx.G1",  # not hex
        "rx.",  # an escape cut short
        ".41",  # `A`, which is never escaped
        ".FF",  # not UTF-8
        "a" * 65,  # too long to be a FHIR id
        "a_b",  # not a FHIR id at all
        "",
        ".Z" + "0" * 31,  # an aggregate id one digit short
        ".Z" + "A" * 32,  # upper-case
    ],
)
def test_any_other_spelling_names_nothing(fhir_id):
    assert prescription_key(fhir_id) is None
    assert patient_key(fhir_id) is None
