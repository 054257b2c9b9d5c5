"""The API page works with no internet access: every asset it loads is served by the service;
the document's version is the package's; the webhook's 202 says what it is."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest


@pytest.fixture
def page(client):
    response = client.get("/schema")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def test_every_asset_of_the_api_page_comes_from_the_service_itself(client, page):
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert len(assets) >= 3  # the script, the preset, the style sheet
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is fetched from elsewhere"
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
    types = {client.get(a).headers["content-type"].split(";")[0] for a in assets}
    assert {"text/javascript", "text/css"} <= types


def test_the_document_carries_the_packages_version_and_says_what_a_202_is(client):
    document = client.get("/schema/openapi.json").json()
    assert document["info"]["version"] == version("drx-service")
    webhook = document["paths"]["/webhooks/drx"]["post"]
    assert webhook["responses"]["202"]["description"].startswith("stored before this answer")
    example = webhook["requestBody"]["content"]["application/json"]["example"]
    assert example["type"].startswith("drx.prescription.")
