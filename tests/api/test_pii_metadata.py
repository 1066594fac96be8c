"""Metadata answers show a personal-data feature's type and flags, never its categories, bounds or hashes."""

from __future__ import annotations

import json

import pytest

from service.models import artifacts
from tests.security.test_pii import EMAILS, make_old, package_people, training_frame


@pytest.fixture
def people_client(artifact_root, tmp_path, make_app):
    assert package_people(artifact_root, tmp_path, "--subject", "email").exit_code == 0
    return make_app().test_client()


def test_version_metadata_names_the_subject_and_counts_hashed_categories(people_client):
    body = people_client.get("/v1/models/people/versions/1").get_json()
    assert body["subject"] == "email"
    email, salary, age = body["input"]["features"]
    assert email["categories"] is None and email["category_count"] == len(EMAILS) and "category_sha256" not in email
    assert (salary["min"], salary["max"]) == (None, None) and age["pii"] is False
    assert "pii_salt" not in json.dumps(body) and "digests" not in json.dumps(body)


def test_openapi_and_v2_describe_pii_features_by_type_only(people_client):
    schemas = people_client.get("/openapi.json").get_json()["components"]["schemas"]
    record = next(s for name, s in schemas.items() if name.endswith("Record") and "email" in s.get("properties", {}))
    assert "enum" not in record["properties"]["email"] and "minimum" not in record["properties"]["salary"]
    inputs = {i["name"]: i for i in people_client.get("/v2/models/people").get_json()["inputs"]}
    assert "min" not in inputs["salary"]["parameters"] and inputs["email"]["datatype"] == "BYTES"


def test_monitoring_says_why_pii_features_have_no_drift(people_client):
    drift = people_client.get("/v1/models/people/monitoring").get_json()["versions"]["1"]["drift"]["features"]
    assert drift["email"]["status"] == "insufficient" and "personal data" in drift["email"]["reason"]
    assert drift["age"].get("pii") is None


def test_an_old_manifest_answers_without_its_raw_values_or_notes(artifact_root, tmp_path, make_app):
    assert package_people(artifact_root, tmp_path).exit_code == 0
    make_old(artifacts.version_dir(artifact_root, "people", 1), training_frame())
    body = make_app().test_client().get("/v1/models/people/versions/1").get_json()
    email = body["input"]["features"][0]
    assert email["categories"] is None and email["category_count"] == len(EMAILS)
    assert body["input"]["notes"] == ["a note on a personal-data feature is withheld"]
    assert body["subject"] is None
