"""Plain one-line summaries of tool steps, e.g. "Read src/app.py", for every agent.

The agent CLIs offer the same kinds of tools (read, search, run, list, edit, fetch, ...)
under their own names and argument keys. Each describer here is written once and made
for one CLI by the argument keys it reads; a parser keeps only its table from its tool
names to these describers. A describer gets the call's arguments and the workspace (to
make paths relative) and returns '' when it has nothing better than "Used <tool>".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sandbox.agents.text import as_code, first_string, quoted, relative_path, shorten

Args = Mapping[str, Any]
Describer = Callable[[Args, str | None], str]
Keys = Sequence[str]  # argument names to try in order: CLIs rename them across versions

_URL = re.compile(r"https?://\S+")


def summary(describer: Describer | None, tool: str, args: Args, workspace: str | None) -> str:
    """What the step did, or "Used <tool>" for a tool without (or beyond) a describer."""
    text = describer(args, workspace) if describer else ""
    return text or f"Used {tool}"


def _path(args: Args, keys: Keys, workspace: str | None) -> str:
    return relative_path(first_string(args, keys), workspace)


def file_action(verb: str, path_keys: Keys) -> Describer:
    """ "<verb> <file>": read, edit, write, delete."""

    def describe(args: Args, workspace: str | None) -> str:
        path = _path(args, path_keys, workspace)
        return f"{verb} {shorten(path)}" if path else f"{verb} a file"

    return describe


def read(path_keys: Keys) -> Describer:
    return file_action("Read", path_keys)


def read_many(list_keys: Keys) -> Describer:
    """Several files or patterns at once; the first key present holds the list."""

    def describe(args: Args, workspace: str | None) -> str:
        items = next((args[key] for key in list_keys if key in args), None)
        names = [relative_path(i, workspace) for i in items if isinstance(i, str)] if isinstance(items, list) else []
        if not names:
            return "Read several files"
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        return f"Read files matching {shorten(shown, 60)}"

    return describe


def listing(path_keys: Keys, *, trailing_slash: bool = False) -> Describer:
    """ "Listed <folder>"; ``trailing_slash`` marks the folder as one, as cursor's summaries do."""

    def describe(args: Args, workspace: str | None) -> str:
        path = _path(args, path_keys, workspace) or "."
        if trailing_slash and not path.endswith("/"):
            path += "/"
        return f"Listed {shorten(path)}"

    return describe


def _naming(keys: Keys, named: Callable[[str], str], unnamed: str) -> Describer:
    """A step told by the first of its arguments among ``keys``, or ``unnamed`` without one."""

    def describe(args: Args, workspace: str | None) -> str:
        value = first_string(args, keys)
        return named(value) if value else unnamed

    return describe


def _in_folder(describe: Describer, folder_keys: Keys) -> Describer:
    """``describe``'s words, and in which folder, unless it is the whole workspace."""

    def in_folder(args: Args, workspace: str | None) -> str:
        text = describe(args, workspace)
        where = _path(args, folder_keys, workspace)
        return f"{text} in {shorten(where, 40)}" if where and where != "." else text

    return in_folder


def shell(command_keys: Keys = ("command",)) -> Describer:
    return _naming(command_keys, lambda command: f"Ran {as_code(command)}", "Ran a command")


def grep(pattern_keys: Keys, folder_keys: Keys) -> Describer:
    """A text search in the code."""
    searched = _naming(pattern_keys, lambda pattern: f"Searched for {quoted(pattern)}", "Searched the code")
    return _in_folder(searched, folder_keys)


def glob(pattern_keys: Keys, folder_keys: Keys) -> Describer:
    """A search for file names."""
    looked = _naming(
        pattern_keys,
        lambda pattern: f"Looked for files matching {quoted(pattern)}",
        "Looked for files",
    )
    return _in_folder(looked, folder_keys)


def semantic_search(query_keys: Keys) -> Describer:
    return _naming(
        query_keys,
        lambda query: f"Searched the codebase for {quoted(query)}",
        "Searched the codebase",
    )


def web_search(query_keys: Keys) -> Describer:
    return _naming(query_keys, lambda query: f"Searched the web for {quoted(query)}", "Searched the web")


def web_fetch(url_keys: Keys, *, url_in_text: bool = False) -> Describer:
    """ "Fetched <url>". With ``url_in_text`` the argument is a prompt that mentions the
    URL (Gemini's web_fetch), and only the URL is shown."""

    def describe(args: Args, workspace: str | None) -> str:
        url = first_string(args, url_keys)
        if url_in_text:
            found = _URL.search(url)
            url = found.group(0) if found else ""
        return f"Fetched {shorten(url)}" if url else "Fetched a web page"

    return describe


def sub_agent(description_keys: Keys) -> Describer:
    return _naming(
        description_keys,
        lambda description: f"Started a sub-agent: {shorten(description, 60)}",
        "Started a sub-agent",
    )


def mcp_tool(name_keys: Keys) -> Describer:
    return _naming(name_keys, lambda name: f"Called {shorten(name, 60)}", "Called an MCP tool")


def fixed(text: str) -> Describer:
    """The same words whatever the arguments (to-do lists, memory notes)."""
    return lambda args, workspace: text


TODOS = fixed("Updated the to-do list")
