"""Our record of a video job (`VideoJob`, kept in the job store) and the two ways it is read.

A job's id is ours (`video_<hex>`), never the upstream's. The upstream's latest answer moves the
record forward (`job_changes`, applied by compare-and-set in `mediagate.videos.service`), and a
client sees the record, under our id, as the OpenAI video object (`openai_video`). Pure.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from mediagate.stores.jobs import TERMINAL, VideoJob
from mediagate.upstream.dialects.videos import UpstreamVideo
from mediagate.videos.spec import openai_size

_ID = re.compile(r"^video_[0-9a-f]{32}$")
# Where a status sits in a job's life, so an older answer (two pollers, two replicas) never
# moves a job backwards.
_RANK = {"queued": 0, "in_progress": 1, "completed": 2, "failed": 2}


def new_video_id() -> str:
    return f"video_{secrets.token_hex(16)}"


def is_video_id(value: str) -> bool:
    """Whether value could be one of our ids (anything else is not looked up at all)."""
    return _ID.match(value) is not None


def job_changes(job: VideoJob, video: UpstreamVideo, now: float) -> dict[str, Any]:
    """What the upstream's latest answer changes in our record: only moves forward."""
    changes: dict[str, Any] = {}
    if _RANK[video.status] > _RANK[job.status]:
        changes["status"] = video.status
    if video.progress > job.progress and _RANK[video.status] >= _RANK[job.status]:
        changes["progress"] = video.progress
    if video.expires_at is not None and video.expires_at != job.expires_at:
        changes["expires_at"] = video.expires_at
    if video.result_url is not None and video.result_url != job.result_url:
        changes["result_url"] = video.result_url
    if changes.get("status") in TERMINAL:
        changes["completed_at"] = video.completed_at or int(now)
        changes["error"] = video.error
    if changes:
        changes["updated_at"] = now
    return changes


def openai_video(job: VideoJob) -> dict[str, Any]:
    """Our record as the OpenAI video object, under our id. Its `model` is the name the client
    asked for, as OpenAI answers it (sora-2, not the muse-video that served it: that is in the
    create's headers and the logs); a record older than that field shows the model that served
    it."""
    return {
        "id": job.id,
        "object": "video",
        "model": job.asked or job.model,
        "status": job.status,
        "progress": job.progress,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "expires_at": job.expires_at,
        "prompt": job.prompt,
        "size": openai_size(job.size),
        "seconds": str(job.seconds),  # VideoSeconds: a string in OpenAI's schema
        "remixed_from_video_id": job.remixed_from,
        "error": job.error,
    }
