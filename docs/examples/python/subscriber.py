#!/usr/bin/env python3
"""Follow tcoder on NATS: job lifecycle events and a tenant's rejections, one JSON line each.

    pip install nats-py
    python3 subscriber.py --tenant acme --nats nats://127.0.0.1:4222 --user producer-acme --password …

Subjects (see docs/asyncapi.yaml): `tcoder.events.<tenant>.<job_id>.<kind>` (a producer user may
read its own tenant's only) with kind accepted, queued,
started, progress, rendition, completed, failed, canceled; and `tcoder.rejected.<tenant>` for
submissions and watched objects that could not become a job. Core subscriptions see what is
published from now on; the EVENTS stream keeps the last 7 days for a JetStream consumer.
With `--until-terminal N` it exits after N completed/failed/canceled events or rejections.
"""

import argparse
import asyncio
import json

import nats

TERMINAL = {"completed", "failed", "canceled", "rejected"}


async def follow(args):
    nc = await nats.connect(
        args.nats,
        user=args.user,
        password=args.password,
        inbox_prefix=f"_INBOX_{args.tenant}",
        allow_reconnect=False,
        connect_timeout=5,
    )
    done = asyncio.Event()
    seen = 0

    async def on_message(msg):
        nonlocal seen
        event = json.loads(msg.data)
        print(json.dumps({"subject": msg.subject, "event": event}), flush=True)
        if event.get("type") in TERMINAL:
            seen += 1
            if args.until_terminal and seen >= args.until_terminal:
                done.set()

    await nc.subscribe(f"tcoder.events.{args.tenant}.>", cb=on_message)
    await nc.subscribe(f"tcoder.rejected.{args.tenant}", cb=on_message)
    await nc.flush()
    print(json.dumps({"ready": True}), flush=True)
    try:
        if args.until_terminal:
            await asyncio.wait_for(done.wait(), timeout=args.timeout)
        else:
            await asyncio.Event().wait()
    finally:
        await nc.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tenant", required=True)
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--until-terminal", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0)
    asyncio.run(follow(p.parse_args()))


if __name__ == "__main__":
    main()
