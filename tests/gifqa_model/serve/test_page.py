"""The page at `/` in headless Chromium (Debian's chromium and chromium-driver, installed by
`make test`): pick a sample, upload a GIF, ask, read the answer and the keyframe strip."""

from __future__ import annotations

import httpx

from gifqa_model.core.config import IndexParams
from tests.gifqa_model.serve.conftest import QUESTION
from tests.helpers import described_frames


def _wait_text(driver, element_id: str, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    el = driver.find_element(By.ID, element_id)
    WebDriverWait(driver, timeout).until(lambda d: el.text.strip() != "")
    return el.text.strip()


def test_upload_ask_and_read_the_answer(browser, live_server, tmp_path, gif) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "clip.gif"
    path.write_bytes(gif)
    want = httpx.post(
        f"{live_server}/v1/answer",
        timeout=30,
        files={"file": ("clip.gif", gif, "image/gif")},
        data={"question": QUESTION},
    ).json()

    browser.get(live_server + "/")
    assert "local" in _wait_text(browser, "model")  # the served model's version, shown
    browser.find_element(By.ID, "file").send_keys(str(path))
    question = browser.find_element(By.ID, "question")
    question.clear()
    question.send_keys(QUESTION)
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 30).until(
        lambda d: (
            d.find_element(By.ID, "result").is_displayed()
            and len(d.find_elements(By.CSS_SELECTOR, "#strip img")) > 0
        )
    )
    shown = browser.find_element(By.ID, "answer").text
    assert shown == (want["answer"] or "(no answer)")
    assert browser.find_element(By.ID, "confidence").text == f"{want['confidence']:.3f}"
    strip = browser.find_elements(By.CSS_SELECTOR, "#strip img")
    keys = browser.find_elements(By.CSS_SELECTOR, "#strip img.key")
    # the strip is the frames the model caches, the keyframes among them marked
    assert len(strip) == IndexParams().frames_per_gif and len(keys) == len(set(want["keyframes"]))
    assert browser.find_element(By.ID, "error").text == ""


def test_a_sample_and_a_refusal(browser, live_server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server + "/")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples img")) == 6
    )
    browser.find_elements(By.CSS_SELECTOR, "#samples img")[2].click()
    WebDriverWait(browser, 30).until(
        lambda d: (d.find_element(By.ID, "preview").get_attribute("src") or "").startswith("blob:")
    )
    question = browser.find_element(By.ID, "question")
    question.clear()
    question.send_keys("why " * 80)  # over the 300-character limit: the page shows the reason
    browser.find_element(By.ID, "go").click()
    assert "question_too_long" in _wait_text(browser, "error")


def test_describe_the_picked_gif(browser, live_server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server + "/")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples img")) == 6
    )
    browser.find_elements(By.CSS_SELECTOR, "#samples img")[0].click()
    WebDriverWait(browser, 30).until(
        lambda d: (d.find_element(By.ID, "preview").get_attribute("src") or "").startswith("blob:")
    )
    browser.find_element(By.ID, "describe").click()
    text = _wait_text(browser, "description")
    # the samples are 16-frame ShapesWorld GIFs: the cached frames spread first to last
    frames = ", ".join(map(str, described_frames(16, IndexParams())))
    assert text.startswith("The model says:") and text.endswith(f"frames {frames})"), text
