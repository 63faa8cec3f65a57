#!/usr/bin/env python3
"""Checks answers tcoder's API really gave against its OpenAPI document, with tools nobody
here wrote: `openapi-spec-validator` for the document, `jsonschema` for the bodies.

usage: openapi_check.py OPENAPI_JSON ANSWERS_JSON

ANSWERS_JSON is a list of {"method", "path" (the template, e.g. /v1/jobs/{id}), "status",
"content_type", "body" (parsed JSON, or null)}. Every answer's status must be documented for
its operation, a JSON body must match the documented schema, and every operation in the
document must have an answer. Prints {"operations": n} and exits 0, or the failures and 1.
"""

import json
import sys

import jsonschema
from openapi_spec_validator import validate


def main():
    doc = json.load(open(sys.argv[1]))
    answers = json.load(open(sys.argv[2]))
    validate(doc)
    failures, seen = [], set()
    operations = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    }
    for answer in answers:
        key = (answer["method"].upper(), answer["path"])
        seen.add(key)
        if key not in operations:
            failures.append(f"{key}: not in the document")
            continue
        operation = doc["paths"][answer["path"]][answer["method"].lower()]
        documented = operation.get("responses", {}).get(str(answer["status"]))
        if documented is None:
            failures.append(f"{key}: answered {answer['status']}, documented {sorted(operation['responses'])}")
            continue
        body = answer.get("body")
        media = answer.get("content_type", "").split(";")[0].strip()
        content = documented.get("content", {})
        if body is None or "json" not in media:
            continue
        if media not in content:
            failures.append(f"{key} {answer['status']}: {media} not documented ({sorted(content)})")
            continue
        schema = dict(content[media].get("schema", {}))
        schema["components"] = doc.get("components", {})
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=str)
        if errors:
            failures.append(f"{key} {answer['status']}: {errors[0].message} at {list(errors[0].absolute_path)}")
    missing = sorted(operations - seen)
    if missing:
        failures.append(f"operations no test called: {missing}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(json.dumps({"operations": len(operations)}))


if __name__ == "__main__":
    main()
