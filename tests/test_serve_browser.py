"""The page of ``rec serve`` in a real browser (headless Chromium, driven by Selenium): find
movies, love or rate them, and see the list follow; the server runs on a loopback port and is stopped."""

from __future__ import annotations

import os
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
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as until  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

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
                 "--window-size=1100,1500",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def _find(browser, wait, words: str, movie_id: int):
    query = browser.find_element(By.ID, "query")
    query.clear()
    query.send_keys(words)
    browser.find_element(By.ID, "find").click()
    return wait.until(until.element_to_be_clickable(
        (By.CSS_SELECTOR, f'#found button.love[data-movie-id="{movie_id}"]')))


def _list(browser, wait, changed_from=None):
    """The recommended rows, once there are ten and (after a change) they differ from before."""
    def ready(d):
        try:
            rows = d.find_elements(By.CSS_SELECTOR, "tr.recommended")
            cells = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
        except StaleElementReferenceException:  # the list was redrawn while being read
            return False
        return cells if len(cells) == 10 and cells != changed_from else False
    return wait.until(ready)


def test_a_person_rates_three_movies_and_the_list_follows(server, browser):
    browser.get(server + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: "ml-latest-small" in d.find_element(By.ID, "about").text)
    assert "implicit feedback" in browser.find_element(By.ID, "about").text
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.recommended")
    _find(browser, wait, "fellowship of the ring", 4993).click()  # loved: no rating
    assert "Fellowship of the Ring" in browser.find_element(By.ID, "loved").text
    first = _list(browser, wait)  # no button to press: the list follows the choice
    assert all(row[1] and "Fellowship of the Ring" not in row[1] for row in first)
    assert {row[5] for row in first} == {"Lord of the Rings: The Fellowship of the Ring, The (2001)"}

    _find(browser, wait, "two towers", 5952)
    Select(browser.find_element(By.CSS_SELECTOR, 'select.rate[data-movie-id="5952"]')).select_by_value("4.5")
    second = _list(browser, wait, changed_from=first)
    _find(browser, wait, "toy story", 1)
    Select(browser.find_element(By.CSS_SELECTOR, 'select.rate[data-movie-id="1"]')).select_by_value("2")
    third = _list(browser, wait, changed_from=second)
    pills = browser.find_elements(By.CSS_SELECTOR, "#loved .pill")
    assert [p.get_attribute("data-movie-id") for p in pills] == ["4993", "5952", "1"]
    assert "★4.5" in pills[1].text and "★2" in pills[2].text
    # liked: the loved movie and the one rated above the person's mean, not Toy Story at 2
    assert {row[5] for row in third} <= {"Lord of the Rings: The Fellowship of the Ring, The (2001)",
                                         "Lord of the Rings: The Two Towers, The (2002)"}
    assert not any(row[1] in ("Toy Story (1995)", "Lord of the Rings: The Two Towers, The (2002)")
                   for row in third)
    if os.environ.get("REC_SCREENSHOT"):  # a picture of the page, for the docs
        browser.save_screenshot(os.environ["REC_SCREENSHOT"])
    pills[0].find_element(By.TAG_NAME, "button").click()  # forget one: the list follows again
    _list(browser, wait, changed_from=third)
    assert browser.find_element(By.ID, "status").text == ""


def test_the_page_shows_the_servers_refusal(server, browser):
    browser.get(server + "/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "about").text != "Loading the model…")
    browser.find_element(By.ID, "query").send_keys("x" * 300)  # over the search's 200 characters
    browser.find_element(By.ID, "find").click()
    status = WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "status").text)
    assert "q: String should have at most 200 characters" in status
