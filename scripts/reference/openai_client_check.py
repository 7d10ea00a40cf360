#!/usr/bin/env python3
"""Talks to `llmfs serve` with the official `openai` Python client, as a user would, and prints what
the Rust test (apps/tests/it/serve.rs) compares with the server's own answers. Optional: nothing at
build or run time needs Python; scripts/test.sh installs `openai` into a venv when it can.

    python scripts/reference/openai_client_check.py http://127.0.0.1:PORT/v1 MODEL_ID

Prints one JSON line: {"models", "completion", "completion_finish", "completion_usage",
"chat_stream", "chat_finish", "bad_request_status", "bad_request_param"}.
"""

import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, model = sys.argv[1:3]
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
    models = [m.id for m in client.models.list()]
    completion = client.completions.create(model=model, prompt="Every effort moves you", max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Every effort moves you"}], max_tokens=12, temperature=0, stream=True
    )
    pieces, chat_finish = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            chat_finish = chunk.choices[0].finish_reason or chat_finish
    try:
        client.completions.create(model=model, prompt="x", max_tokens=4, n=2)
        status, param = None, None
    except openai.BadRequestError as error:
        status, param = error.status_code, (error.body or {}).get("param")
    print(json.dumps({
        "models": models,
        "completion": completion.choices[0].text,
        "completion_finish": completion.choices[0].finish_reason,
        "completion_usage": completion.usage.model_dump(),
        "chat_stream": "".join(pieces),
        "chat_finish": chat_finish,
        "bad_request_status": status,
        "bad_request_param": param,
    }))


if __name__ == "__main__":
    main()
