#!/usr/bin/env python3
"""Submit a video to tcoder over NATS: put it in the bucket, then ask for a job.

    pip install nats-py boto3
    AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… python3 producer.py clip.mp4 \
        --tenant acme --nats nats://127.0.0.1:4222 --user producer-acme --password … \
        --s3-endpoint http://127.0.0.1:19000 --bucket tcoder --job '{"preset": "hls"}'

The object goes to `uploads/<tenant>/<name>` (a tenant may only name objects there). The
submission is a request on `tcoder.submit.<tenant>` with a `Nats-Msg-Id`: ingest answers with
`{"job_id", "status", "replayed"}` or `{"error": {"code", "message"}}`, printed as one JSON
line. Sending the same Nats-Msg-Id again (a retry after a timeout) answers with the same job.
With `--publish` the submission is published without waiting (the SUBMIT stream keeps it until
ingest makes the job; watch `tcoder.events.<tenant>.*.accepted` or `tcoder.rejected.<tenant>`).
"""

import argparse
import asyncio
import json
import os
import sys
import uuid

import boto3
import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout


def put_object(args, key):
    s3 = boto3.client(
        "s3",
        endpoint_url=args.s3_endpoint,
        region_name=os.environ.get("AWS_REGION", "auto"),
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    s3.upload_file(args.file, args.bucket, key)


async def submit(args):
    key = args.key or f"uploads/{args.tenant}/{os.path.basename(args.file)}"
    if not args.no_upload:
        put_object(args, key)
    body = dict(json.loads(args.job), source={"key": key})
    headers = {"Nats-Msg-Id": args.msg_id or str(uuid.uuid4())}
    subject = f"tcoder.submit.{args.tenant}"

    errors = []

    async def on_error(e):
        errors.append(str(e))

    nc = await nats.connect(
        args.nats,
        user=args.user,
        password=args.password,
        # Replies come to this tenant's own inbox prefix (its NATS user may read no other).
        inbox_prefix=f"_INBOX_{args.tenant}",
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=5,
    )
    try:
        if args.publish:
            await nc.publish(subject, json.dumps(body).encode(), headers=headers)
            await nc.flush(timeout=5)
            reply = {"published": headers["Nats-Msg-Id"], "key": key}
        else:
            try:
                msg = await nc.request(
                    subject, json.dumps(body).encode(), timeout=args.timeout, headers=headers
                )
                reply = json.loads(msg.data)
            except (NatsTimeout, NoRespondersError) as e:
                reply = {"error": {"code": "nats.no_reply", "message": repr(e)}}
        # A refused publish (another tenant's subject) is reported by the server as an error.
        if errors:
            reply = {"error": {"code": "nats.permission", "message": "; ".join(errors)}}
    finally:
        await nc.close()
    print(json.dumps(reply), flush=True)
    return 0 if "error" not in reply else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--tenant", required=True)
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--s3-endpoint", required=True)
    p.add_argument("--bucket", default="tcoder")
    p.add_argument("--key", help="object key (default uploads/<tenant>/<file name>)")
    p.add_argument("--job", default="{}", help="the job, as the JSON body of POST /v1/jobs")
    p.add_argument("--msg-id", help="Nats-Msg-Id (default: a new UUID)")
    p.add_argument("--publish", action="store_true", help="publish without waiting for the job id")
    p.add_argument("--no-upload", action="store_true", help="the object is in the bucket already")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    sys.exit(asyncio.run(submit(args)))


if __name__ == "__main__":
    main()
