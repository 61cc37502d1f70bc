"""What each reseller route accepts, kept apart from the HTTP plumbing in app.py.

The rules are deliberately stricter than "whatever works": the point of the simulator is
that a gateway normalisation bug (a field left in, a null instead of a removal, a size a
route cannot do) fails a test here instead of passing silently and failing in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

Route = Literal[
    "official",
    "official-2.5",
    "official-2.6",
    "web",
    "web-2.5",
    "web-2.6",
    "vip",
    "vip-2.5",
    "vip-2.6",
    "chat",
]
Endpoint = Literal["images", "chat"]

MAX_PROMPT_CHARS = 32000
MAX_N = 10
MAX_PARTIAL_IMAGES = 3

OFFICIAL_GROUPS = ("OpenAI Official", "OpenAI Official Enterprise")

# (token group, model) -> route. The same model name means different routes per group,
# which is the trap the gateway's routing has to get right (upstream-2026/image-models.md).
_ROUTES: dict[tuple[str, str], Route] = {
    ("default", "gpt-image-2"): "web",
    ("default", "gpt-image-2-vip"): "vip",
    ("default", "gpt-image-2.5-flare-vip"): "vip-2.5",
    ("default", "gpt-image-2.5-sunburst-vip"): "vip-2.5",
    ("default", "gpt-image-2.5-web"): "web-2.5",
    # GPT Image 2.6's per-image VIP and web routes (docs.laozhang.ai/en/api-capabilities/
    # gpt-image-2-6.md, undated).
    ("default", "gpt-image-2.6-flare-vip"): "vip-2.6",
    ("default", "gpt-image-2.6-sunburst-vip"): "vip-2.6",
    ("default", "gpt-image-2.6-web"): "web-2.6",
    # Legacy ("Sora Image Generation (Legacy Integration)"), still answered.
    ("default", "sora_image"): "chat",
    ("default", "gpt-4o-image"): "chat",
    **{(group, "gpt-image-2"): "official" for group in OFFICIAL_GROUPS},
    **{
        (group, f"gpt-image-2.5-{line}"): "official-2.5"
        for group in OFFICIAL_GROUPS
        for line in ("flare", "sunburst")
    },
    **{
        (group, f"gpt-image-2.6-{line}"): "official-2.6"
        for group in OFFICIAL_GROUPS
        for line in ("flare", "sunburst")
    },
}
# Retired ids answer 404 naming their replacement, in every group, and are not billed
# (docs.laozhang.ai/en/models/retired.md).
_REPLACEMENT = (
    "gpt-image-2.6-sunburst or gpt-image-2.6-flare (or gpt-image-2.5-sunburst / "
    "gpt-image-2.5-flare)"
)
RETIRED: dict[str, tuple[str, str]] = {
    "gpt-image-1": ("2026-11-16", _REPLACEMENT),
    "dall-e-3": ("2026-11-16", _REPLACEMENT),
    # Shut down by OpenAI on 2026-12-01 (developers.openai.com/api/docs/deprecations): the
    # official forward has nothing left to forward them to. (The reseller's own retired page
    # did not list them yet; a 404 naming the successors is what its other retirements gave.)
    "gpt-image-1.5": ("2026-12-01", _REPLACEMENT),
    "gpt-image-1.5-2025-12-16": ("2026-12-01", _REPLACEMENT),
    "gpt-image-1-mini": ("2026-12-01", _REPLACEMENT),
    "chatgpt-image-latest": ("2026-12-01", _REPLACEMENT),
}

_OFFICIAL_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "size",
        "quality",
        "output_format",
        "output_compression",
        "background",
        "moderation",
        "response_format",
        "user",
        # Streaming is an official-API feature; the reverse routes answer in one piece.
        "stream",
        "partial_images",
    }
)
# 2.5 and 2.6 through the official forward: the official fields (2.6 adds `complexity`);
# whether they stream is not documented, so they refuse it.
_NEW_OFFICIAL_FIELDS = _OFFICIAL_FIELDS - {"stream", "partial_images"}
_ALLOWED_FIELDS: dict[Route, frozenset[str]] = {
    "official": _OFFICIAL_FIELDS,
    "official-2.5": _NEW_OFFICIAL_FIELDS,
    # 2.6 adds complexity and GIF frames [secondary: a third party's parameter list; the SDK's
    # ImageGenerateParams has the same].
    "official-2.6": _NEW_OFFICIAL_FIELDS | {"complexity", "frame_count"},
    "web": frozenset({"model", "prompt", "n", "response_format", "user"}),
    "web-2.5": frozenset({"model", "prompt", "n", "response_format", "user"}),
    # "PNG/JPEG/WebP/GIF": the one thing the 2.6 web route lets a client choose.
    "web-2.6": frozenset({"model", "prompt", "n", "output_format", "response_format", "user"}),
    "vip": frozenset({"model", "prompt", "n", "size", "response_format", "user"}),
    "vip-2.5": frozenset({"model", "prompt", "n", "size", "quality", "response_format", "user"}),
    # PNG only, so no output_format; quality without xhigh and max.
    "vip-2.6": frozenset({"model", "prompt", "n", "size", "quality", "response_format", "user"}),
}
# Only the edits endpoint takes input_fidelity, and only gpt-image-2 through the official API.
_EDIT_ONLY_FIELDS: dict[Route, frozenset[str]] = {
    "official": frozenset({"input_fidelity"}),
}
# Fields a route knows about but refuses, with a clearer message than "unknown parameter":
# field -> the hint that follows "This route does not support '<field>'; ".
_STREAM_HINT = "it does not stream; use gpt-image-2 in the OpenAI Official group for streaming"
_NO_STREAM = {"stream": _STREAM_HINT, "partial_images": _STREAM_HINT}
_REFUSED_FIELDS: dict[Route, dict[str, str]] = {
    "web": {
        "size": "use gpt-image-2-vip for size or the OpenAI Official group for quality",
        "quality": "use gpt-image-2-vip for size or the OpenAI Official group for quality",
        **_NO_STREAM,
    },
    "web-2.5": {
        "size": "the web route picks its own size (up to ~2K); use a -vip model for size",
        "quality": "use gpt-image-2.5-flare-vip or -sunburst-vip for quality",
        **_NO_STREAM,
    },
    "vip": {
        "quality": "use gpt-image-2 in the OpenAI Official group for quality",
        **_NO_STREAM,
    },
    "web-2.6": {
        "size": "the web route picks its own size (about 2K); use a -vip model for size",
        "quality": "use gpt-image-2.6-flare-vip or -sunburst-vip for quality",
        **_NO_STREAM,
    },
    "vip-2.5": _NO_STREAM,
    "vip-2.6": _NO_STREAM,
    "official-2.5": _NO_STREAM,
    "official-2.6": _NO_STREAM,
}

# The 30 explicit sizes of the Codex route (gpt-image-2-routes.txt), 1K/2K/4K per ratio.
VIP_SIZES = (
    *("1280x1280", "2048x2048", "2880x2880"),  # 1:1
    *("848x1280", "1360x2048", "2336x3520"),  # 2:3
    *("1280x848", "2048x1360", "3520x2336"),  # 3:2
    *("960x1280", "1536x2048", "2480x3312"),  # 3:4
    *("1280x960", "2048x1536", "3312x2480"),  # 4:3
    *("1024x1280", "1632x2048", "2560x3216"),  # 4:5
    *("1280x1024", "2048x1632", "3216x2560"),  # 5:4
    *("720x1280", "1152x2048", "2160x3840"),  # 9:16
    *("1280x720", "2048x1152", "3840x2160"),  # 16:9
    *("1280x544", "2048x864", "3840x1632"),  # 21:9
)
_QUALITIES: dict[Route, tuple[str, ...]] = {
    "official": ("low", "medium", "high", "auto"),
    "official-2.5": ("low", "medium", "high", "xhigh", "max", "auto"),
    "official-2.6": ("low", "medium", "high", "xhigh", "max", "auto"),
    # "Any quality low...max", nothing said of auto.
    "vip-2.5": ("low", "medium", "high", "xhigh", "max"),
    # "Does not accept xhigh / max"; auto, as on 2.5's VIP, is not said.
    "vip-2.6": ("low", "medium", "high"),
}
_COMPLEXITIES = ("low", "medium", "high")
_OUTPUT_FORMATS: dict[Route, tuple[str, ...]] = {
    "official": ("png", "jpeg", "webp"),
    "official-2.5": ("png", "jpeg", "webp"),
    # Animated GIF and SVG through the official forward; the web route GIF only.
    "official-2.6": ("png", "jpeg", "webp", "gif", "svg"),
    "web-2.6": ("png", "jpeg", "webp", "gif"),
}
GIF_FRAMES = (2, 16)  # frame_count, only with gif
GIF_DEFAULT_FRAMES = 9  # OpenAI's default (the SDK's ImageGenerateParams)
_BACKGROUNDS = ("transparent", "opaque", "auto")
_MODERATIONS = ("low", "auto")
_RESPONSE_FORMATS = ("url", "b64_json")
_INPUT_FIDELITIES = ("high", "low")
WEB_25_SIZE = (2048, 2048)  # "native output up to ~2K"
WEB_26_SIZE = (2048, 2048)  # "about 2K"

_OFFICIAL_MAX_EDGE = 3840
_OFFICIAL_MAX_RATIO = 3
_OFFICIAL_MIN_PIXELS = 655_360
_OFFICIAL_MAX_PIXELS = 8_294_400
_SIZE_RE = re.compile(r"(\d{1,5})x(\d{1,5})")

# Output tokens of a one-megapixel image by quality, the simulator's own figures: the official
# per-size token table (1024x1024 row) for gpt-image-2; 2.5 adds xhigh and max; 2.6 spends 3-4x
# 2.5's tokens at low and medium.
_OUTPUT_TOKENS_PER_MP: dict[Route, dict[str, int]] = {
    "official": {"low": 272, "medium": 1056, "high": 4160},
    "official-2.5": {"low": 272, "medium": 1056, "high": 4160, "xhigh": 6240, "max": 8320},
    "official-2.6": {
        "low": 1088,
        "medium": 3168,
        "high": 4160,
        "xhigh": 6240,
        "max": 8320,
    },
}
# Input tokens billed per image sent to /v1/images/edits: a flat stand-in for the official
# size-dependent count, so a gateway that recomputes usage instead of relaying it shows up.
EDIT_IMAGE_TOKENS = 256

_CHAT_FIELDS = frozenset({"model", "messages", "stream", "user", "temperature"})
_CHAT_ROLES = ("system", "developer", "user", "assistant")
_MARKER_SIZES = {"2:3": (1024, 1536), "3:2": (1536, 1024), "1:1": (1024, 1024)}
_MARKER_RE = re.compile(r"【([^【】]*)】")
_MARKER_MESSAGE = (
    "ratio marker must appear once at the end of the prompt as 【2:3】, 【3:2】 or 【1:1】"
)
_IMAGE_PART_TOKENS = 85

_DIRECTIVE_STATUS_RE = re.compile(r"\[sim:status=(\d{3})\]")
_DIRECTIVE_CACHED_RE = re.compile(r"\[sim:cached=(\d+):(\d+)\]")
_DIRECTIVE_SLEEP_RE = re.compile(r"\[sim:sleep=(\d+(?:\.\d+)?)\]")
_DIRECTIVE_USAGE_RE = re.compile(r"\[sim:usage=(huge|negative|zero)\]")
LEAKY_ERROR = "[sim:leakyerror]"
# Where a leaky upstream's error says it failed: an address of its own network.
INTERNAL_URL = "http://10.1.2.3:8080/internal"


def leaky_error(key: str) -> dict[str, str]:
    """An error of a leaky upstream (`[sim:leakyerror]`): its key as the code and the param,
    the key and its internal addresses in the message."""
    return {
        "message": f"Worker {INTERNAL_URL} (node fd00::7, 192.168.0.7) failed for Bearer {key}.",
        "type": f"Bearer {key}",
        "param": f"Bearer {key}",
        "code": f"Bearer {key}",
    }


_DIRECTIVE_BADB64_RE = re.compile(r"\[sim:badb64=(junk|zeros)\]")


def bad_b64(prompt: str) -> str | None:
    """What `[sim:badb64=junk|zeros]` puts in place of an image's base64: text that is not
    base64, or 1 MiB of `AAAA` (valid base64 of zeros, not an image). None without it."""
    found = _DIRECTIVE_BADB64_RE.search(prompt) if "[sim:badb64=" in prompt else None
    if found is None:
        return None
    return "!!!notbase64" if found.group(1) == "junk" else "AAAA" * (256 * 1024)


def claimed_usage(prompt: str, real: int) -> int:
    """What the upstream claims it used: `real`, or with `[sim:usage=huge|negative|zero]` in the
    prompt, 10^15, minus `real` (or -1000) or 0: usage a gateway must not believe."""
    found = _DIRECTIVE_USAGE_RE.search(prompt) if "[sim:usage=" in prompt else None
    if found is None:
        return real
    return {"huge": 10**15, "negative": -(real or 1000), "zero": 0}[found.group(1)]


class ConnectionCut(Exception):
    """Raised to make the server drop the connection (the `[sim:cut]` directive)."""


class SimError(Exception):
    """An upstream error answer: HTTP status plus the OpenAI-shaped error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        # The OpenAI error body, as the gateway's errors.py also writes it: repeated on purpose,
        # the simulator imports nothing of the gateway.
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None, code: str = "invalid_value") -> SimError:
    return SimError(400, message, param=param, code=code)


def resolve_route(group: str, model: str, endpoint: Endpoint) -> Route:
    retired = RETIRED.get(model)
    if retired is not None:
        day, replacement = retired
        raise SimError(
            404,
            f"The model {model} has been retired (since {day}); use {replacement}.",
            code="model_not_found",
        )
    route = _ROUTES.get((group, model))
    # The chat route only exists at /v1/chat/completions and the images routes only at the
    # Images API; the reseller answers a mismatch as "no channel", not as a bad request.
    if route is None or (route == "chat") != (endpoint == "chat"):
        raise SimError(
            503,
            f"No available channel for model {model} under group {group}",
            type_="upstream_error",
            code="model_not_found",
        )
    return route


@dataclass(frozen=True)
class Directives:
    """Fault injections a test plants in the prompt so it can reach them through the gateway."""

    refuse: bool = False
    status: int | None = None
    garbage: bool = False
    sleep_s: float = 0.0
    b64url: bool = False
    b64only: bool = False  # answer base64 even when url was asked (some routes ignore it)
    # Drop the connection: mid-body after the first event when streaming, else before any
    # response at all (a connection reset, as a crashed or restarted upstream gives).
    cut: bool = False
    # Tokens of the input the upstream's prompt cache served: (text, image), each at most what
    # the request has (official routes' usage only).
    cached: tuple[int, int] = (0, 0)
    # Streamed events' line endings: "lf", or "crlf" (each CR and LF sent in separate chunks,
    # as the SSE spec allows) or "cr" (bare CRs, also allowed).
    line_end: str = "lf"
    nostream: bool = False  # answer plain JSON even to `stream: true` (some upstreams do)
    # A leaky upstream: its key echoed into every string it may (revised_prompt, size, an extra
    # field, and a video's ETag and Content-Disposition).
    echokey: bool = False
    # A leaky error: the key in the code, param and type, internal addresses in the message.
    leakyerror: bool = False
    # The image links it writes serve their file in Content-Encoding: gzip, whatever was asked.
    gzipimage: bool = False


def parse_directives(prompt: str | None) -> Directives:
    if not prompt or "[sim:" not in prompt:
        return Directives()
    status_match = _DIRECTIVE_STATUS_RE.search(prompt)
    status = int(status_match.group(1)) if status_match else None
    sleep_match = _DIRECTIVE_SLEEP_RE.search(prompt)
    cached = _DIRECTIVE_CACHED_RE.search(prompt)
    return Directives(
        refuse="[sim:refuse]" in prompt,
        # Only error statuses make sense; anything else would be a test typo, so ignore it.
        status=status if status is not None and 400 <= status <= 599 else None,
        garbage="[sim:garbage]" in prompt,
        sleep_s=float(sleep_match.group(1)) if sleep_match else 0.0,
        b64url="[sim:b64url]" in prompt,
        b64only="[sim:b64only]" in prompt,
        cut="[sim:cut]" in prompt,
        cached=(int(cached.group(1)), int(cached.group(2))) if cached else (0, 0),
        line_end="crlf" if "[sim:crlf]" in prompt else "cr" if "[sim:cr]" in prompt else "lf",
        nostream="[sim:nostream]" in prompt,
        echokey="[sim:echokey]" in prompt,
        leakyerror=LEAKY_ERROR in prompt,
        gzipimage="[sim:gzipimage]" in prompt,
    )


@dataclass(frozen=True)
class ImageJob:
    """A validated Images API request, with every default and `auto` resolved."""

    route: Route
    prompt: str
    n: int
    width: int
    height: int
    response_format: str
    quality: str
    output_format: str
    background: str
    stream: bool = False
    partial_images: int = 0  # validated and kept even without stream, where it does nothing
    edit: bool = False  # from /v1/images/edits
    input_images: int = 0  # images uploaded to an edit (the mask not counted)
    frame_count: int = 0  # the frames of a gif (0 for any other format)
    cached: tuple[int, int] = (0, 0)  # input tokens served from the prompt cache: text, image
    model: str = ""  # the model asked for, which the simulated pictures show

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def seed(self, index: int) -> str:
        """The render seed of output image `index`.

        The first image of a generation uses the bare prompt (so tests can predict it); an
        edit appends NUL + "edit" so an edit never passes for a generation; later images differ
        so a gateway that duplicates or drops images is caught.
        """
        base = f"{self.prompt}\x00edit" if self.edit else self.prompt
        return base if index == 0 else f"{base}\x00{index}"


def validate_images(route: Route, body: dict[str, Any], *, edit: bool = False) -> ImageJob:
    """Validate a generation body, or an edit's text fields once coerced to JSON types."""
    for name, hint in _REFUSED_FIELDS.get(route, {}).items():
        # Present-with-null counts: the gateway must remove fields, not null them.
        if name in body:
            raise invalid(
                f"This route does not support '{name}'; {hint}.", name, "unsupported_parameter"
            )
    allowed = _ALLOWED_FIELDS[route]
    if edit:
        allowed = allowed | _EDIT_ONLY_FIELDS.get(route, frozenset())
    for name in body:
        if name not in allowed:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")

    prompt = _string(body, "prompt")
    if prompt is None:
        raise invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if not prompt.strip():
        raise invalid("Invalid 'prompt': empty string.", "prompt", "empty_string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{MAX_PROMPT_CHARS}, but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    n = _integer(body, "n", 1, MAX_N)
    if n is None:
        n = 1
    if route != "official" and n != 1:
        # Every route but gpt-image-2's official forward makes one image per request.
        raise invalid("Invalid 'n': this route generates one image per request.", "n")
    # Every GPT Image route answers base64 unless asked for links.
    response_format = _choice(body, "response_format", _RESPONSE_FORMATS) or "b64_json"
    _string(body, "user")
    # Only the official routes get this far with these fields; the others refuse them above.
    stream = _boolean(body, "stream")
    if stream is False:
        # Strict like null: a non-streaming request omits the field instead of sending false.
        raise invalid(
            "Invalid 'stream': omit it for a non-streaming request; only true is accepted.",
            "stream",
        )
    partial_images = _integer(body, "partial_images", 0, MAX_PARTIAL_IMAGES) or 0
    _choice(body, "input_fidelity", _INPUT_FIDELITIES)
    job = _route_job(route, prompt, n, response_format, body)
    _check_new_formats(job, body, stream=bool(stream), edit=edit)
    cached = parse_directives(prompt).cached
    return replace(
        job, stream=bool(stream), partial_images=partial_images, edit=edit, cached=cached
    )


def _check_new_formats(job: ImageJob, body: dict[str, Any], *, stream: bool, edit: bool) -> None:
    """GPT Image 2.6's GIF and SVG: frame_count 2-16 only with gif; svg for generations only,
    one image [secondary]; neither streams (the SDK's contract)."""
    if "frame_count" in body and job.output_format != "gif":
        raise invalid(
            "Invalid 'frame_count': only supported with output_format 'gif'.", "frame_count"
        )
    if job.output_format not in ("gif", "svg"):
        return
    if stream:
        raise invalid(f"Invalid 'stream': {job.output_format} output does not stream.", "stream")
    if job.output_format == "svg" and edit:
        raise invalid("Invalid 'output_format': svg is for generations only.", "output_format")
    if job.output_format == "svg" and job.n != 1:
        raise invalid("Invalid 'n': svg output makes one image per request.", "n")


def _route_job(
    route: Route, prompt: str, n: int, response_format: str, body: dict[str, Any]
) -> ImageJob:
    if route == "web":
        return ImageJob(route, prompt, n, 1024, 1024, response_format, "auto", "png", "auto")
    if route == "web-2.5":
        width, height = WEB_25_SIZE
        return ImageJob(route, prompt, n, width, height, response_format, "auto", "png", "auto")
    if route == "web-2.6":
        width, height = WEB_26_SIZE
        output_format = _choice(body, "output_format", _OUTPUT_FORMATS[route]) or "png"
        job = ImageJob(
            route, prompt, n, width, height, response_format, "auto", output_format, "auto"
        )
        return _with_frames(job, body)
    if route in ("vip-2.5", "vip-2.6"):
        width, height = _flexible_size(body)
        quality = _choice(body, "quality", _QUALITIES[route]) or "high"
        return ImageJob(route, prompt, n, width, height, response_format, quality, "png", "auto")
    if route == "vip":
        size = _string(body, "size")
        if size is None:
            size = "2048x2048"
        elif size not in VIP_SIZES:
            raise invalid(
                f"Invalid 'size': '{size}'. This route needs an explicit table size, one of: "
                + ", ".join(VIP_SIZES)
                + ".",
                "size",
            )
        width, height = _parse_size(size)
        return ImageJob(route, prompt, n, width, height, response_format, "auto", "png", "auto")
    return _validate_official_options(route, prompt, n, response_format, body)


def _validate_official_options(
    route: Route, prompt: str, n: int, response_format: str, body: dict[str, Any]
) -> ImageJob:
    width, height = _flexible_size(body)
    quality = _choice(body, "quality", _QUALITIES[route]) or "auto"
    if route == "official-2.6":
        _choice(body, "complexity", _COMPLEXITIES)
    output_format = _choice(body, "output_format", _OUTPUT_FORMATS[route]) or "png"
    if _integer(body, "output_compression", 0, 100) is not None and output_format not in (
        "jpeg",
        "webp",
    ):
        raise invalid(
            "Invalid 'output_compression': only supported with output_format 'jpeg' or 'webp'.",
            "output_compression",
        )
    background = _choice(body, "background", _BACKGROUNDS) or "auto"
    if background == "transparent" and output_format == "jpeg":
        raise invalid(
            "Invalid 'background': 'transparent' needs output_format 'png' or 'webp'.",
            "background",
        )
    _choice(body, "moderation", _MODERATIONS)
    job = ImageJob(
        route,
        prompt,
        n,
        width,
        height,
        response_format,
        # The official API reports what it actually did, never "auto".
        "medium" if quality == "auto" else quality,
        output_format,
        "opaque" if background == "auto" else background,
    )
    return _with_frames(job, body)


def _with_frames(job: ImageJob, body: dict[str, Any]) -> ImageJob:
    """A gif job with its frames (2-16, 9 when not asked); frame_count is checked later to
    come with gif (the routes that take it)."""
    frames = _integer(body, "frame_count", *GIF_FRAMES)
    if job.output_format != "gif":
        return job
    return replace(job, frame_count=frames or GIF_DEFAULT_FRAMES)


def _flexible_size(body: dict[str, Any]) -> tuple[int, int]:
    """An official-style size: absent or auto is 1024x1024, else any WxH within the bounds."""
    asked = _string(body, "size")
    # Not `or "auto"`: an empty string is a bad size, not an absent one.
    size = "auto" if asked is None else asked
    if size == "auto":
        return 1024, 1024
    _check_official_size(size)
    return _parse_size(size)


def _check_official_size(size: str) -> None:
    match = _SIZE_RE.fullmatch(size)
    if match is None:
        raise invalid(f"Invalid 'size': '{size}'. Expected 'auto' or WIDTHxHEIGHT.", "size")
    width, height = int(match.group(1)), int(match.group(2))
    long_side, short_side = max(width, height), min(width, height)
    problem = None
    if width % 16 or height % 16:
        problem = "both sides must be multiples of 16"
    elif long_side > _OFFICIAL_MAX_EDGE:
        problem = f"the longest side must be at most {_OFFICIAL_MAX_EDGE}"
    elif long_side > _OFFICIAL_MAX_RATIO * short_side:
        problem = f"the long side must be at most {_OFFICIAL_MAX_RATIO}x the short side"
    elif not _OFFICIAL_MIN_PIXELS <= width * height <= _OFFICIAL_MAX_PIXELS:
        problem = (
            f"the total pixel count must be between {_OFFICIAL_MIN_PIXELS} "
            f"and {_OFFICIAL_MAX_PIXELS}"
        )
    if problem:
        raise invalid(f"Invalid 'size': '{size}'; {problem}.", "size")


def _parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def reports_usage(route: Route) -> bool:
    """Whether the route bills by token and says so in `usage` (the official forward)."""
    return route in _OUTPUT_TOKENS_PER_MP


def image_usage(job: ImageJob, images: int | None = None) -> dict[str, Any]:
    """Usage for `images` output images (default: all n of them), as OpenAI reports it: input
    text and image tokens, the part of each its prompt cache served (`cached_tokens`, split in
    `cached_tokens_details`), and the output image tokens."""
    count = job.n if images is None else images
    text_tokens = len(job.prompt) // 4 + 1
    image_tokens = EDIT_IMAGE_TOKENS * job.input_images
    cached_text = min(job.cached[0], text_tokens)
    cached_image = min(job.cached[1], image_tokens)
    table = _OUTPUT_TOKENS_PER_MP[job.route]
    per_mp = table.get(job.quality, table["medium"])
    output_tokens = round(per_mp * job.width * job.height / (1024 * 1024)) * count
    if "[sim:usage=per_frame]" in job.prompt and job.frame_count:
        # How a GIF's frames are billed is not documented: an upstream that bills each frame
        # as an image.
        output_tokens *= job.frame_count
    if "[sim:usage=huge]" in job.prompt:
        output_tokens = 9_999_999  # within any sanity cap, far beyond what an image makes
    else:
        output_tokens = claimed_usage(job.prompt, output_tokens)
    input_tokens = text_tokens + image_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "image_tokens": image_tokens,
            "text_tokens": text_tokens,
            "cached_tokens": cached_text + cached_image,
            "cached_tokens_details": {"text_tokens": cached_text, "image_tokens": cached_image},
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


@dataclass(frozen=True)
class ChatJob:
    prompt: str
    width: int
    height: int
    image_parts: int


def chat_prompt(body: dict[str, Any]) -> str | None:
    """Best-effort prompt for directive scanning, before the body has been validated."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    part["text"]
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
            return None
    return None


def validate_chat(body: dict[str, Any]) -> ChatJob:
    for name in body:
        if name not in _CHAT_FIELDS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if _boolean(body, "stream"):
        raise invalid("streaming not supported by simulator yet", "stream", "unsupported_value")
    _string(body, "user")
    if "temperature" in body:
        temperature = body["temperature"]
        if not _is_number(temperature):
            raise _type_error("temperature", "a number", temperature)
        if not 0 <= temperature <= 2:
            raise invalid("Invalid 'temperature': must be between 0 and 2.", "temperature")

    messages = body.get("messages")
    if "messages" not in body:
        raise invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _type_error("messages", "an array", messages)
    if not messages:
        raise invalid("Invalid 'messages': empty array.", "messages", "empty_array")
    last_user: tuple[str, int] | None = None
    for index, message in enumerate(messages):
        text, images = _check_message(index, message)
        if message["role"] == "user":
            last_user = (text, images)
    if last_user is None:
        raise invalid("Invalid 'messages': no message with role 'user'.", "messages")
    prompt, image_parts = last_user
    if not prompt.strip():
        raise invalid("Invalid 'messages': the last user message has no text.", "messages")
    width, height = _marker_size(prompt)
    return ChatJob(prompt, width, height, image_parts)


def _check_message(index: int, message: Any) -> tuple[str, int]:
    """Validate one chat message and return (its text, how many image parts it carries)."""
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _type_error(param, "an object", message)
    role = message.get("role")
    if role not in _CHAT_ROLES:
        raise invalid(f"Invalid '{param}.role': {role!r}.", f"{param}.role")
    content = message.get("content")
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise _type_error(f"{param}.content", "a string or an array", content)
    texts: list[str] = []
    images = 0
    for part_index, part in enumerate(content):
        part_param = f"{param}.content[{part_index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and _image_url_ok(part.get("image_url")):
            # Accepted and counted, never fetched: the simulator must stay offline.
            images += 1
        else:
            raise invalid(
                f"Invalid '{part_param}': not a valid text or image_url part.", part_param
            )
    return "\n".join(texts), images


def _image_url_ok(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        return False
    url: str = value["url"]
    return url.startswith(("http://", "https://", "data:image/"))


def _marker_size(prompt: str) -> tuple[int, int]:
    stripped = prompt.rstrip()
    markers = list(_MARKER_RE.finditer(stripped))
    # A lone bracket counts as a broken marker: the upstream doc's own sample code drops the
    # opening 【, and a gateway that copied it should fail here rather than get 1:1 silently.
    brackets = stripped.count("【") + stripped.count("】")
    if not markers and not brackets:
        return 1024, 1024
    if (
        len(markers) == 1
        and brackets == 2
        and markers[0].end() == len(stripped)
        and markers[0].group(1) in _MARKER_SIZES
    ):
        return _MARKER_SIZES[markers[0].group(1)]
    raise invalid(_MARKER_MESSAGE, "messages")


def chat_usage(job: ChatJob, content: str) -> dict[str, int]:
    prompt_tokens = len(job.prompt) // 4 + 1 + _IMAGE_PART_TOKENS * job.image_parts
    completion_tokens = len(content) // 4 + 1
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _type_error(param: str, expected: str, value: Any) -> SimError:
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param,
        "invalid_type",
    )


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true is not a number.
    return isinstance(value, int | float) and not isinstance(value, bool)


# The helpers below return None only when the field is absent: an explicit JSON null is a
# type error, because the gateway is supposed to drop unset fields rather than send null.


def _string(body: dict[str, Any], name: str) -> str | None:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def _boolean(body: dict[str, Any], name: str) -> bool | None:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, bool):
        raise _type_error(name, "a boolean", value)
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise _type_error(name, "an integer", value)
    if not low <= value <= high:
        raise invalid(f"Invalid '{name}': must be between {low} and {high}, got {value}.", name)
    return value


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = _string(body, name)
    if value is not None and value not in allowed:
        supported = ", ".join(f"'{item}'" for item in allowed)
        raise invalid(f"Invalid value: '{value}'. Supported values are: {supported}.", name)
    return value


def image_routes() -> list[tuple[str, str, Route]]:
    """Every (token group, model, route) the image and chat endpoints answer: what the
    group's `/v1/models` lists (simulator/listing.py)."""
    return [(group, model, route) for (group, model), route in _ROUTES.items()]
