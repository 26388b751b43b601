"""The page of ``rec serve`` in a real browser (headless Chromium, driven by Selenium): find a
movie, say you love it, and get a list; the server runs on a loopback port and is stopped."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from rec.als import ModelConfig
from rec.data.splits import make_split
from rec.model import Recommender
from rec.serve import create_app
from rec.training import TrainConfig, fit

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as until  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and "
                                "chromedriver (apt-get install chromium chromium-driver; .ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small):
    import uvicorn
    split = make_split(small)
    cfg = ModelConfig(name="features", K=6, feedback="implicit", tau=0.01, alpha0=0.2)
    result = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=50))
    model = Recommender.from_training(small, split.train, result.params, cfg, result.final)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(model), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("rec serve did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def test_a_person_finds_a_movie_they_love_and_gets_ten_others(server, browser):
    browser.get(server + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: "ml-latest-small" in d.find_element(By.ID, "about").text)
    assert "implicit feedback" in browser.find_element(By.ID, "about").text
    assert browser.find_element(By.ID, "recommend").get_attribute("disabled") is not None
    browser.find_element(By.ID, "query").send_keys("fellowship of the ring")
    browser.find_element(By.ID, "find").click()
    love = wait.until(until.element_to_be_clickable((By.CSS_SELECTOR, "#found button")))
    assert love.get_attribute("data-movie-id") == "4993"
    love.click()
    assert "Fellowship of the Ring" in browser.find_element(By.ID, "loved").text
    browser.find_element(By.ID, "recommend").click()
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.recommended") or False)
    assert len(rows) == 10
    titles = [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows]
    assert all(titles) and not any("Fellowship of the Ring" in t for t in titles)
    assert browser.find_element(By.ID, "status").text == ""


def test_the_page_shows_the_servers_refusal(server, browser):
    browser.get(server + "/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "about").text != "Loading the model…")
    browser.find_element(By.ID, "query").send_keys("x" * 300)  # over the search's 200 characters
    browser.find_element(By.ID, "find").click()
    status = WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "status").text)
    assert "q: String should have at most 200 characters" in status
