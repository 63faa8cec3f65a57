"""Uses a client generated from tcoder's /openapi.json by openapi-python-client, as an app
developer would: create a job with typed options, upload its source to the presigned URL,
read it back with its types, list, cancel a second job and delete it. Prints a JSON summary.

Usage: generated_client.py <client-parent-dir> <api-url> <api-key> <video-file>
"""

import json
import sys

sys.path.insert(0, sys.argv[1])

import httpx  # noqa: E402
from client import AuthenticatedClient  # noqa: E402
from client.api.jobs import cancel_job, create_job, delete_job, get_job, list_jobs  # noqa: E402
from client.models import (  # noqa: E402
    CreatedView,
    JobRequest,
    JobStatus,
    JobView,
    OutputKind,
    Preset,
    Priority,
    Problem,
    Quality,
    VideoCodec,
)

api, key, video = sys.argv[2], sys.argv[3], sys.argv[4]
with open(video, "rb") as f:
    body = f.read()
tcoder = AuthenticatedClient(base_url=api, token=key)

request = JobRequest(
    preset=Preset.HLS,
    qualities=[Quality("144p")],
    outputs=[OutputKind.HLS],
    video_codec=VideoCodec.H264,
    priority=Priority.HIGH,
    content_length=len(body),
)
created = create_job.sync(client=tcoder, body=request)
assert isinstance(created, CreatedView), created
upload = created.upload
headers = {k: v for k, v in upload.headers.additional_properties.items() if k != "content-length"}
put = httpx.put(upload.url, content=body, headers=headers)
assert put.status_code == 200, put.text

job = get_job.sync(client=tcoder, id=created.job.id)
assert isinstance(job, JobView), job
listed = list_jobs.sync(client=tcoder, limit=5)

bad = create_job.sync_detailed(client=tcoder, body=JobRequest.from_dict({"preset": "nope"}))
problem = bad.parsed

second = create_job.sync(client=tcoder, body=JobRequest(preset=Preset.WEB_OPTIMIZED))
canceled = cancel_job.sync(client=tcoder, id=second.job.id)
deleted = delete_job.sync_detailed(client=tcoder, id=second.job.id)
deleted_again = delete_job.sync_detailed(client=tcoder, id=second.job.id)
after_delete = get_job.sync_detailed(client=tcoder, id=second.job.id)

print(json.dumps({
    "id": created.job.id,
    "status": job.status.value,
    "preset": job.preset.value,
    "priority": job.priority.value,
    "status_is_enum": isinstance(job.status, JobStatus),
    "listed": [j.id for j in listed.jobs],
    "problem": {"status": bad.status_code, "code": problem.code if isinstance(problem, Problem) else None},
    "canceled": canceled.status.value,
    "deleted": [deleted.status_code, deleted_again.status_code, after_delete.status_code],
}))
