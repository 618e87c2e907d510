"""`/openapi.json` describes every route, and `/docs` works offline in a real headless Chromium (Debian's `chromium`
and `chromium-driver`, installed by `make browser-tools`): the page renders every operation from files the server
itself serves, and a "Try it out" request made in the browser comes back with a classification."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import RunningServer, running_server

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 60


@pytest.fixture(scope="module")
def docs_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"topic={artifacts['roberta']}", f"bert={artifacts['bert']}"], http_port=0) as server:
        yield server


def url(server: RunningServer) -> str:
    assert server.server is not None
    return f"http://127.0.0.1:{server.server.http_port}"


def test_openapi_document_describes_every_route(docs_server: RunningServer) -> None:
    document = httpx.get(f"{url(docs_server)}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    for expected in [
        ("POST", "/v2/models/{name}/infer"),
        ("POST", "/v2/models/{name}/versions/{version}/infer"),
        ("GET", "/v2/health/ready"),
        ("POST", "/invocations"),
        ("POST", "/models/{name}/invocations"),
        ("GET", "/ping"),
        ("POST", "/ortserve.v1.Inference/Classify"),
        ("GET", "/openapi.json"),
    ]:
        assert expected in operations
    for path, item in document["paths"].items():
        for operation in item.values():
            assert operation["summary"] and operation["responses"]["200"]
            names = [parameter["name"] for parameter in operation.get("parameters", [])]
            assert names == [part[1:-1] for part in path.split("/") if part.startswith("{")]
            if "requestBody" in operation:
                for media in operation["requestBody"]["content"].values():
                    assert media["schema"] and media["example"] is not None
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    answer = httpx.post(f"{url(docs_server)}/v2/models/topic/infer", json=example)
    assert answer.status_code == 200  # the documented example works as it stands


def test_docs_assets_are_served_by_the_server_itself(docs_server: RunningServer) -> None:
    page = httpx.get(f"{url(docs_server)}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http" not in page.text.replace("http-equiv", "")  # no absolute URL: nothing from a CDN
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert httpx.get(f"{url(docs_server)}/docs/{asset}").status_code == 200
    assert httpx.get(f"{url(docs_server)}/docs/..%2Fsecret").status_code == 404


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver: make browser-tools",
)
def test_docs_page_renders_and_try_it_out_classifies_in_headless_chromium(
    docs_server: RunningServer, tmp_path: Path
) -> None:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(f"{url(docs_server)}/docs")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 0)
        document = httpx.get(f"{url(docs_server)}/openapi.json").json()
        operations = sum(len(item) for item in document["paths"].values())
        rendered = driver.find_elements(By.CSS_SELECTOR, ".opblock")
        assert len(rendered) == operations
        paths = {
            element.get_attribute("data-path")
            for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        assert "/ortserve.v1.Inference/Classify" in paths and "/v2/models/{name}/infer" in paths

        classify = driver.find_element(
            By.XPATH,
            "//*[contains(@class,'opblock-summary-path')][@data-path='/ortserve.v1.Inference/Classify']"
            "/ancestor::*[contains(concat(' ', normalize-space(@class), ' '), ' opblock ')][1]",
        )
        classify.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(lambda d: classify.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
        classify.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
        execute = wait.until(lambda d: classify.find_element(By.CSS_SELECTOR, ".btn.execute"))
        execute.click()
        body = wait.until(
            lambda d: classify.find_element(By.CSS_SELECTOR, ".live-responses-table .response-col_description pre")
        )
        answer = json.loads(body.text)
        assert answer["model"] == "topic" and answer["modelVersion"]
        assert answer["results"][0]["labels"][0]["label"]
        status = classify.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status").text
        assert status.strip().startswith("200")
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(name.startswith(url(docs_server)) for name in loaded), loaded  # nothing from outside
    finally:
        driver.quit()
