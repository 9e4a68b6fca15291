"""A screenshot of the page at `/` after a question, in headless Chromium, for the docs.

    python bench/page_screenshot.py --url http://127.0.0.1:8000 --gif some.gif \
        --question "what is the color of the circle ?" --out docs/images/page.png
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--gif", type=Path, required=True)
    ap.add_argument("--question", default="what is the color of the circle ?")
    ap.add_argument("--search", default="a red circle is moving left")
    ap.add_argument("--out", type=Path, default=Path("docs/images/page.png"))
    args = ap.parse_args()
    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,1150",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get(args.url + "/")
        driver.find_element(By.ID, "file").send_keys(str(args.gif.resolve()))
        question = driver.find_element(By.ID, "question")
        question.clear()
        question.send_keys(args.question)
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip img")) > 0
        )
        q = driver.find_element(By.ID, "q")
        q.clear()
        q.send_keys(args.search)
        driver.find_element(By.CSS_SELECTOR, "#searchform button").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "hits").text != "")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(args.out)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
