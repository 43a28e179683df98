"""The app in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser)."""

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from chat.examples import load_examples
from model.media.render import palette
from tests.helpers import serving, serving_concepts
from tests.helpers import scripted_rounds, shared_path, write_image, write_video

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")]


@pytest.fixture(scope="module")
def url(tiny_chats):
    with serving(tiny_chats["qwen3_vl"]) as address:
        yield address


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield browser.new_page()
        finally:
            browser.close()


def send(page, url: str, media: Path, text: str) -> None:
    page.goto(url)
    page.wait_for_selector("#ask-box textarea")
    page.set_input_files("#ask-box input[type=file]", str(media))
    page.wait_for_selector("#ask-box [aria-label='File thumbnail']", timeout=20_000)
    page.fill("#ask-box textarea", text)
    page.keyboard.press("Enter")


def check_downloads(page) -> None:
    link = page.wait_for_selector("#downloads a[href*='masks.zip']", timeout=30_000)
    response = page.request.get(link.get_attribute("href"))
    assert response.ok and response.body()[:2] == b"PK"


def test_photo_answer_shows_overlay_legend_and_downloads(page, url):
    photo = shared_path("data", "images", "groceries.jpg")
    send(page, url, photo, "Which item here would you use to make a salad?")
    page.wait_for_selector("#legend .segchat-legend-item", timeout=60_000)
    assert page.locator("#legend").inner_text().split() == ["1.", "the", "red", "apple", "2.", "the", "cup"]
    page.wait_for_selector("#chatbot .segchat-object")
    expect(page.locator("#chatbot img[src*='overlay']")).to_have_count(1, timeout=30_000)
    expect(page.locator("#canvas img")).to_have_count(1, timeout=30_000)
    check_downloads(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_photo.png"), full_page=True)


def test_a_click_on_an_example_asks_it_and_again_after_clear(page, url):
    example = load_examples()[0]
    page.goto(url)
    for _ in range(2):  # Clear removes the session's files, never the shipped example
        page.locator("#examples button", has_text=example.instruction).click()
        expect(page.locator("#chatbot")).to_contain_text(example.instruction, timeout=30_000)
        expect(page.locator("#chatbot img[src*='overlay']")).to_have_count(1, timeout=60_000)
        expect(page.locator("#legend .segchat-legend-item")).to_have_count(2, timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "app_example.png"), full_page=True)
        page.click("#clear")
        expect(page.locator("#chatbot img")).to_have_count(0, timeout=30_000)


def test_video_answer_shows_a_playable_overlay_video(page, url):
    video = shared_path("data", "videos", "bedroom.mp4")
    send(page, url, video, "Please segment the child who is moving around the room.")
    player = page.wait_for_selector("#chatbot video[src*='overlay']", timeout=90_000)
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=player, timeout=20_000)
    # The legend and the chat update in separate events: wait for it rather than read it at once.
    expect(page.locator("#legend .segchat-legend-item")).to_have_count(2, timeout=30_000)
    check_downloads(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_video.png"), full_page=True)


@pytest.fixture(scope="module")
def concept_url(concept_chat):
    with serving_concepts(concept_chat) as address:
        yield address


def test_find_every_one_shows_every_instance_in_the_legend(page, concept_url, tmp_path):
    photo = write_image(tmp_path / "photo.png", 96, 64)
    send(page, concept_url, photo, "Which item would you use to make a salad?")
    expect(page.locator("#legend .segchat-legend-item")).to_have_count(2, timeout=60_000)
    slider = page.locator("#threshold input[type=number]")
    slider.fill("0")
    slider.press("Enter")
    page.locator("#target label").first.click()  # "1. the red apple"
    page.click("#find-every")
    expect(page.locator("#legend .segchat-counts")).to_contain_text("the red apple", timeout=60_000)
    items = page.locator("#legend .segchat-legend-item")
    assert items.count() > 2
    assert all("the red apple" in t for t in items.all_inner_texts())
    expect(page.locator("#chatbot")).to_contain_text("Find every one: the red apple")
    check_downloads(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_find_every.png"), full_page=True)


def test_an_agent_answer_shows_how_it_found_the_objects(page, agent_chat, tmp_path):
    call = '<tool_call>{"name": "segment", "arguments": {"phrases": ["cup"]}}</tool_call><|im_end|>'
    keep = '<tool_call>{"name": "keep", "arguments": {"candidates": [1, 2]}}</tool_call><|im_end|>'
    with serving(agent_chat) as address, scripted_rounds(agent_chat, call, keep, "Two cups.<|im_end|>"):
        send(page, address, write_image(tmp_path / "cups.png", 96, 64), "Which things hold coffee?")
        summary = page.locator("#chatbot summary", has_text="How I found it")
        expect(summary).to_be_visible(timeout=60_000)
        expect(page.locator("#chatbot details li").first).not_to_be_visible()  # folded until asked
        summary.click()
        expect(page.locator("#chatbot details")).to_contain_text("SAM 3 found 1: cup")
        expect(page.locator("#legend")).to_contain_text("cup")


def test_a_region_brushed_on_the_picture_is_asked_about_and_shown_as_a_numbered_mark(page, url, tmp_path):
    send(page, url, write_image(tmp_path / "photo.png", 320, 240), "Look at this.")
    page.wait_for_selector("#legend .segchat-legend-item", timeout=60_000)
    page.click("#regions-panel .label-wrap")
    canvas = page.locator("#regions-editor canvas").first
    canvas.wait_for(timeout=20_000)
    page.locator("#regions-editor").get_by_role("button", name="Brush").click()
    box = canvas.bounding_box()

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

    page.mouse.move(*at(0.4, 0.4))
    page.mouse.down()
    for corner in [(0.6, 0.4), (0.6, 0.6), (0.4, 0.6), (0.4, 0.4)]:  # a box drawn with the brush
        page.mouse.move(*at(*corner), steps=8)
    page.mouse.up()
    page.fill("#ask-box textarea", "What is region 1?")
    page.keyboard.press("Enter")
    marks = page.locator("#chatbot img[src*='regions']")
    expect(marks).to_have_count(1, timeout=60_000)
    expect(page.locator("#chatbot .segchat-object")).to_have_count(4, timeout=30_000)  # both answers' objects
    picture = np.asarray(Image.open(io.BytesIO(page.request.get(marks.first.get_attribute("src")).body())))
    assert (picture[..., :3] == palette(1)[0]).all(-1).sum() > 20  # region 1's outline and label in its colour
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_region.png"), full_page=True)


def test_a_region_brushed_on_a_chosen_video_frame_is_followed_through_the_clip(page, url, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames=6, width=160, height=120)
    send(page, url, clip, "Look at this.")
    page.wait_for_selector("#legend .segchat-legend-item", timeout=90_000)
    page.click("#regions-panel .label-wrap")
    frame = page.locator("#regions-frame input[type=number]")
    expect(frame).to_be_visible(timeout=20_000)
    frame.fill("3")
    with page.expect_response(lambda r: "/gradio_api/" in r.url and r.request.method == "POST", timeout=30_000):
        frame.press("Enter")  # the editor gets frame 3 (and forgets any drawing)
    canvas = page.locator("#regions-editor canvas").first
    canvas.wait_for(timeout=20_000)
    page.wait_for_timeout(500)
    page.locator("#regions-editor").get_by_role("button", name="Brush", exact=True).click()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=10)
    page.mouse.up()
    page.wait_for_timeout(1500)  # the editor hands its layers to the page after the stroke
    page.fill("#ask-box textarea", "Where does region 1 go?")
    page.keyboard.press("Enter")
    marks = page.locator("#chatbot img[src*='regions']")
    expect(marks).to_have_count(1, timeout=150_000)
    picture = np.asarray(Image.open(io.BytesIO(page.request.get(marks.first.get_attribute("src")).body())))
    assert picture.shape[:2] == (120, 160) and (picture[..., :3] == palette(1)[0]).all(-1).sum() > 10
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # the frame it was drawn on, as decoded, wherever the region (SAM2's mask from the stroke's clicks) is not
    same = [(picture[..., :3] == frame).all(-1).mean() for frame in frames]
    assert same[3] > 0.1 and max(same[:3] + same[4:]) < 0.01
    expect(page.locator("#chatbot")).not_to_contain_text("⚠️")
