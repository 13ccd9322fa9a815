"""The coding agents: how each runs in a sandbox, and how its output becomes events.

Modules, one concept each:

- ``events``: the normalized ``AgentEvent`` vocabulary every agent's output becomes
- ``adapters``: per agent, the container command, image, key and egress endpoints
- ``settings``: which agent and model, and their keys
- ``session``: one agent answering one question in one sandbox, ending in one terminal event
- ``cursor_stream``, ``gemini_stream``: one parser per CLI's stream-json dialect
- ``jsonlines``: the ``StreamParser`` protocol and the JSON-lines parser skeleton they share
- ``describe``: the tool-step summaries ("Read src/app.py"), written once for all agents
- ``failures``: error classification and the plain-language failure messages
- ``answer``: assembling the answer text without repeats
- ``text``: shortening, relative paths and tolerant readers of the CLIs' JSON

Each parser turns one run's stdout, line by line, into events:

    parser = CursorStreamParser()
    for line in stdout_lines:
        events = parser.feed(line)
        ...
        if parser.done:  # the answer is in; stop the container
            break
    events = parser.finish(exit_code, stderr_tail)

A parser never raises on odd input: unknown event types are ignored and lines that are
not JSON come back as ``Diagnostic`` events.

Nothing is imported here, so that importing ``sandbox.agents.events`` (as the publishers
do) loads neither the parsers nor Docker; import each name from its module.
"""
