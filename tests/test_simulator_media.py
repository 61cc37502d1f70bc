"""The simulator's media look real (issue 26, "Offline, it must look real too"): its images
show their request (the prompt's words, the model, the size) and its videos are H.264 MP4 clips
a browser plays, of the job's size and length, whose stills are frames of the clip."""

from __future__ import annotations

import io
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import av
import httpx2
import pytest
from PIL import Image, ImageChops, ImageStat

from mediagate.simulator import make_png
from mediagate.simulator.png import make_gif, make_svg
from mediagate.simulator.videofiles import FPS, VARIANTS, Clip, frame_image, mp4, still

from .conftest import GROUP_KEYS, Sim, wait_for_status

INK = (17, 17, 17)  # the colour png.py writes words in; the patterns never use it exactly


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def ink(image: Image.Image) -> int:
    """How many pixels are written in ink: grows with the words drawn."""
    return sum(count for count, colour in image.getcolors(1 << 24) or [] if colour == INK)


# --- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1024, 1024), (1536, 1024), (720, 1280), (3840, 2160), (7, 3)])
def test_an_image_has_exactly_its_size_and_a_pattern(size: tuple[int, int]) -> None:
    image = decode(make_png(*size, f"a fox {size}", "gpt-image-2"))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", size)
    # Not one flat colour: a pattern (and, where there is room, words on a panel).
    assert len(image.getcolors(1 << 24) or []) >= 2


def test_an_image_writes_its_prompt_and_more_words_take_more_ink() -> None:
    short = decode(make_png(1024, 1024, "a fox", "gpt-image-2"))
    long = decode(make_png(1024, 1024, "a red fox asleep in deep snow under pines", "gpt-image-2"))
    assert 0 < ink(short) < ink(long)
    assert short.tobytes() != long.tobytes()


def test_the_model_is_written_under_the_prompt() -> None:
    # The same seed draws the same pattern and prompt: only the footer line may differ.
    one = decode(make_png(1024, 1024, "a lamp", "gpt-image-2"))
    other = decode(make_png(1024, 1024, "a lamp", "gpt-image-2-vip"))
    box = ImageChops.difference(one, other).getbbox()
    assert box is not None, "the model is not drawn"
    left, top, right, bottom = box
    assert bottom - top < 1024 // 10 and right - left < 1024 * 3 // 4  # one short line


def test_words_are_big_enough_to_read_on_a_4k_image() -> None:
    start = time.perf_counter()
    data = make_png(3840, 2160, "a lighthouse at dusk, new for this test", "gpt-image-2")
    assert time.perf_counter() - start < 1.5  # drawn small, scaled up, compressed fast
    image = decode(data)
    # Where every channel is ink's: the words, and nothing of the pattern.
    bands = ImageChops.difference(image, Image.new("RGB", image.size, INK)).split()
    masks = [band.point(lambda v: 255 if v == 0 else 0) for band in bands]
    box = ImageChops.darker(ImageChops.darker(masks[0], masks[1]), masks[2]).getbbox()
    assert box is not None
    # A line or two of words: glyphs tens of pixels tall on a 2160-pixel-high image.
    assert 2160 // 40 <= box[3] - box[1] <= 2160 // 2


def test_a_gif_shows_the_picture_first_and_has_its_frames() -> None:
    data = make_gif(1536, 1024, "a kite over the sea", 5, "gpt-image-2.6-flare")
    gif = Image.open(io.BytesIO(data))
    assert (gif.format, gif.size, gif.n_frames) == ("GIF", (1536, 1024), 5)
    first = gif.convert("RGB")
    picture = decode(make_png(1536, 1024, "a kite over the sea", "gpt-image-2.6-flare"))
    # The picture make_png draws (its words and all), in at most 64 colours.
    assert max(ImageStat.Stat(ImageChops.difference(first, picture)).mean) < 4
    for frame in range(1, 5):
        gif.seek(frame)
        gif.load()
    big = Image.open(io.BytesIO(make_gif(3840, 2160, "a kite", 16)))
    assert (big.size, big.n_frames) == ((3840, 2160), 16)


def test_an_svg_says_its_prompt_model_and_size() -> None:
    svg = make_svg(1024, 1024, 'a "fox" & <hound>', "gpt-image-2.6-web")
    root = ET.fromstring(svg)
    words = " ".join(element.text or "" for element in root.iter() if element.text)
    assert 'a "fox" & <hound>' in words
    assert "gpt-image-2.6-web" in words and "1024x1024" in words
    assert root.get("width") == "1024" and root.get("height") == "1024"


# --- videos -----------------------------------------------------------------------------------


def boxes(data: bytes) -> list[str]:
    """The MP4's top-level boxes, in order."""
    found, position = [], 0
    while position + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[position + 8 : position + 16])
        assert size >= 8, f"a malformed box at {position}"
        found.append(kind.decode("latin-1"))
        position += size
    assert position == len(data)
    return found


def probe(data: bytes) -> tuple[str, str, list[tuple[int, int]], float]:
    """Codec, pixel format, each decoded frame's size, and the duration in seconds."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        sizes = [(frame.width, frame.height) for frame in container.decode(stream)]
        assert container.duration is not None
        return stream.codec_context.name, stream.pix_fmt or "", sizes, container.duration / 1e6


def assert_playable(data: bytes, size: tuple[int, int], seconds: float) -> None:
    kinds = boxes(data)
    assert kinds[0] == "ftyp" and "moov" in kinds and "mdat" in kinds
    assert kinds.index("moov") < kinds.index("mdat"), "moov first: a player starts at once"
    codec, pixels, sizes, duration = probe(data)
    assert (codec, pixels) == ("h264", "yuv420p")  # what every browser plays
    assert len(sizes) >= seconds * FPS * 0.9 and set(sizes) == {size}
    assert duration == pytest.approx(seconds, abs=0.2)


@pytest.fixture
def muse(sim: Sim) -> Iterator[httpx2.Client]:
    headers = {"Authorization": f"Bearer {GROUP_KEYS['default']}"}
    with httpx2.Client(base_url=f"{sim.url}/v1", headers=headers, timeout=30) as client:
        yield client


def test_a_video_is_an_h264_mp4_of_its_size_and_length_served_with_ranges(
    muse: httpx2.Client,
) -> None:
    created = muse.post("/videos", json={"model": "muse-video", "prompt": "a fox", "seconds": "5"})
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]
    wait_for_status(muse, f"/videos/{video_id}", "completed")
    whole = muse.get(f"/videos/{video_id}/content")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    data = whole.content
    assert whole.headers["content-length"] == str(len(data))
    assert 5_000 < len(data) < 300_000  # small: tens of KB
    assert_playable(data, (1280, 720), 5)
    # A browser's player asks for ranges: each is exactly those bytes of the same file.
    for first, last in ((0, 1), (100, 4099), (len(data) - 10, len(data) - 1)):
        part = muse.get(f"/videos/{video_id}/content", headers={"Range": f"bytes={first}-{last}"})
        assert part.status_code == 206 and part.content == data[first : last + 1]
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"


def test_a_seedance_clip_has_the_tasks_duration_and_its_last_frame_png_its_size(
    sim: Sim,
) -> None:
    headers = {"Authorization": f"Bearer {GROUP_KEYS['SeeDance2']}"}
    tasks = "/seedance/api/v3/contents/generations/tasks"
    with httpx2.Client(base_url=sim.url, headers=headers, timeout=30) as ark:
        body = {
            "model": "doubao-seedance-2-0-260128",
            "content": [{"type": "text", "text": "a lighthouse"}],
            "ratio": "9:16",
            "resolution": "480p",
            "duration": 4,
            "return_last_frame": True,
        }
        created = ark.post(tasks, json=body)
        assert created.status_code == 200, created.text
        done = wait_for_status(ark, f"{tasks}/{created.json()['id']}", "succeeded")
    assert_playable(httpx2.get(done["content"]["video_url"]).content, (496, 864), 4)
    last = decode(httpx2.get(done["content"]["last_frame_url"]).content)
    assert (last.format, last.size) == ("PNG", (496, 864))


def test_a_large_job_gets_a_clip_of_its_aspect_within_720p_pixels() -> None:
    clip = Clip.of("video_big", "1920x1080", "4", "muse-video-pro")
    assert clip.pixels == (1280, 720)
    assert_playable(mp4(clip), (1280, 720), 4)


def test_each_look_differs_and_something_moves() -> None:
    firsts = [frame_image(Clip(variant, "640x360", 2.0, "m"), 0) for variant in range(VARIANTS)]
    assert len({image.tobytes() for image in firsts}) == VARIANTS
    clip = Clip(0, "640x360", 2.0, "m")
    assert frame_image(clip, 0).tobytes() != frame_image(clip, -1).tobytes()
    # And the encoded clip moves too: its first and last decoded frames differ.
    with av.open(io.BytesIO(mp4(clip))) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    assert ImageStat.Stat(ImageChops.difference(frames[0], frames[-1])).mean != [0.0, 0.0, 0.0]


def test_the_stills_are_frames_of_the_clip() -> None:
    clip = Clip.of("video_stills", "1280x720", "4", "sora-2")
    thumbnail = decode(still(clip, "WEBP"))
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (320, 180))
    with av.open(io.BytesIO(mp4(clip))) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    middle = frames[clip.frames // 2].resize(thumbnail.size, Image.Resampling.BILINEAR)
    # The same picture, give or take two lossy encodings.
    assert max(ImageStat.Stat(ImageChops.difference(middle, thumbnail.convert("RGB"))).mean) < 8
    other = frames[0].resize(thumbnail.size, Image.Resampling.BILINEAR)
    assert other.tobytes() != middle.tobytes()
    sheet = decode(still(clip, "JPEG"))
    assert (sheet.format, sheet.size) == ("JPEG", (128 * 3, 72 * 3))
