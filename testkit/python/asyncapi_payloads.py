#!/usr/bin/env python3
"""Validates payloads tcoder really sent against docs/asyncapi.yaml, with the `jsonschema`
package (an independent JSON Schema implementation).

usage: asyncapi_payloads.py ASYNCAPI_YAML SAMPLES_JSON

SAMPLES_JSON is a list of {"subject": "...", "payload": {...}} (the channel is found by its
address, `{param}` matching one token) or {"message": "<components.messages name>",
"payload": {...}} (for replies, whose subject is the requester's inbox). Each payload must
match exactly one of its channel's messages. Prints {"covered": [message names]} and exits 0,
or prints every failure and exits 1.
"""

import json
import re
import sys

import jsonschema
import yaml


def resolve(doc, node):
    while isinstance(node, dict) and set(node) == {"$ref"}:
        path = node["$ref"].removeprefix("#/").split("/")
        node = doc
        for part in path:
            node = node[part]
    return node


def message_name(doc, ref_or_message):
    ref = ref_or_message.get("$ref", "") if isinstance(ref_or_message, dict) else ""
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/components/messages/") else None


def main():
    doc = yaml.safe_load(open(sys.argv[1]))
    samples = json.load(open(sys.argv[2]))
    channels = []
    for name, channel in doc["channels"].items():
        pattern = re.escape(channel["address"])
        pattern = re.sub(r"\\\{[a-z_]+\\\}", r"[^.]+", pattern)
        messages = {}
        for key, message in channel.get("messages", {}).items():
            messages[message_name(doc, message) or key] = resolve(doc, message)
        channels.append((name, re.compile(f"^{pattern}$"), messages))

    def validator(payload_schema):
        root = dict(payload_schema)
        root["components"] = doc.get("components", {})
        return jsonschema.Draft7Validator(root)

    failures, covered = [], set()
    for sample in samples:
        payload = sample["payload"]
        if "message" in sample:
            message = doc["components"]["messages"].get(sample["message"])
            if message is None:
                failures.append(f"no message {sample['message']} in the document")
                continue
            candidates = {sample["message"]: resolve(doc, message)}
            where = sample["message"]
        else:
            found = [c for c in channels if c[1].match(sample["subject"])]
            if len(found) != 1:
                failures.append(f"{sample['subject']}: {len(found)} channels match")
                continue
            candidates = found[0][2]
            where = sample["subject"]
        matched, errors = [], []
        for name, message in candidates.items():
            schema = resolve(doc, message.get("payload", {}))
            problems = sorted(validator(schema).iter_errors(payload), key=str)
            if problems:
                errors.append(f"  as {name}: {problems[0].message} at {list(problems[0].absolute_path)}")
            else:
                matched.append(name)
        if len(matched) != 1:
            failures.append(
                f"{where}: matches {matched or 'no message'}\n"
                + "\n".join(errors)
                + f"\n  payload: {json.dumps(payload)[:600]}"
            )
        else:
            covered.add(matched[0])
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(json.dumps({"covered": sorted(covered)}))


if __name__ == "__main__":
    main()
