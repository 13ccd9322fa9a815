"""Why an agent run failed, in words fit for the person who asked.

The classification (egress first, then each CLI's own patterns) and the shape of every
message are shared; each parser declares only its CLI's patterns and phrases as one
``AgentFailures`` table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sandbox.agents.events import AgentError, ErrorKind
from sandbox.agents.text import DETAIL_LIMIT, strip_ansi

EGRESS_BLOCKED_MESSAGE = "LLM endpoint not reachable (blocked by egress policy)"
NAME_RESOLUTION_MESSAGE = (
    "LLM endpoint not reachable: its name did not resolve ({detail}). Not the egress policy: "
    "check DNS on the host running askbox (its egress proxy resolves the allowlisted names)"
)
UPSTREAM_MESSAGE = (
    "LLM endpoint not reachable: the egress proxy let it through but could not connect ({detail}): "
    "its name did not resolve or it refused the connection. Check DNS and the route out of the host running askbox"
)

# Squid's page for a name it could not resolve: the proxy let the request through, and
# the name did not resolve on the host running askbox.
_DNS = re.compile(r"ERR_DNS_FAIL", re.IGNORECASE)
# A lookup made inside the sandbox (Node's getaddrinfo codes, curl's and glibc's words).
# The sandbox has no resolver by design: names are resolved by the egress proxy. An agent
# that resolves a name itself went around the proxy, so that is the policy at work
# (recorded: cursor-agent with no route out prints `getaddrinfo EAI_AGAIN api2.cursor.sh`).
_LOCAL_DNS = re.compile(
    r"getaddrinfo\s+\S+\s+\S+|\b(?:ENOTFOUND|EAI_AGAIN)\b|Could not resolve host"
    r"|Temporary failure in name resolution|Name or service not known",
    re.IGNORECASE,
)
# The proxy answered CONNECT with a 5xx: allowed, but it could not reach the endpoint
# (Squid's 503 for a name it could not resolve or a connection it could not make).
_UPSTREAM = re.compile(
    r"Proxy response \(5\d\d\)|statusCode=5\d\d|proxy[^\n]{0,80}\b5(?:02|03|04)\b"
    r"|\b5(?:02|03|04)\b[^\n]{0,80}proxy|CONNECT[^\n]{0,40}\b5(?:02|03|04)\b",
    re.IGNORECASE,
)
# Node's networking errors, undici's and the proxy agents' wording for a refused
# CONNECT: what an agent prints when the egress proxy does not let it through.
_EGRESS = re.compile(
    r"ECONNREFUSED|ETIMEDOUT|fetch failed|tunneling socket"
    r"|Proxy response \(\d+\)|proxy[^\n]{0,80}\b403\b|\b403\b[^\n]{0,80}proxy"
    r"|CONNECT[^\n]{0,40}\b403\b",
    re.IGNORECASE,
)

Rule = tuple[ErrorKind, re.Pattern[str]]
Explain = Callable[[str], str]  # the agent's error text -> the message a user reads


def looks_like_egress_block(text: str) -> bool:
    return bool(_EGRESS.search(text))


def network_failure(text: str) -> ErrorKind | None:
    """UNREACHABLE when the proxy let the request through but its name did not resolve or
    the endpoint could not be reached; EGRESS_BLOCKED for a request the proxy refused, a
    lookup inside the sandbox (around the proxy) or any other network error; else None."""
    if _DNS.search(text) or _UPSTREAM.search(text):
        return ErrorKind.UNREACHABLE
    if _LOCAL_DNS.search(text) or looks_like_egress_block(text):
        return ErrorKind.EGRESS_BLOCKED
    return None


def unreachable_message(text: str) -> str:
    found = _DNS.search(text)
    if found:
        return NAME_RESOLUTION_MESSAGE.format(detail=found.group(0).strip())
    found = _UPSTREAM.search(text)
    return UPSTREAM_MESSAGE.format(detail=found.group(0).strip() if found else "no detail")


def classify(text: str, rules: Iterable[Rule]) -> ErrorKind:
    """The error kind for an agent's error text. Network failures win: behind a
    blocked proxy an agent's other complaints (auth, model list) are side effects."""
    network = network_failure(text)
    if network is not None:
        return network
    for kind, pattern in rules:
        if pattern.search(text):
            return kind
    return ErrorKind.AGENT


def stderr_excerpt(stderr: str, limit: int = DETAIL_LIMIT) -> str:
    """The end of stderr, on one line: the reason is usually in the last lines."""
    lines = [line.strip() for line in strip_ansi(stderr).splitlines() if line.strip()]
    text = " | ".join(lines)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def exit_phrase(agent: str, exit_code: int | None) -> str:
    if exit_code is None:
        return f"{agent} stopped"
    return f"{agent} exited with code {exit_code}"


def with_context(message: str, stderr: str) -> str:
    excerpt = stderr_excerpt(stderr)
    return f"{message} ({excerpt})" if excerpt and excerpt not in message else message


def explained(message: str) -> Explain:
    """Our explanation, followed by the agent's own words where they add something."""
    return lambda text: with_context(message, text)


def fixed(message: str) -> Explain:
    """Our explanation alone: the agent's words would only repeat it."""
    return lambda text: message


@dataclass(frozen=True)
class AgentFailures:
    """One agent CLI's failures: how to recognise them and how to put them to a user."""

    agent: str  # the CLI's name as users know it: "cursor-agent", "Gemini CLI"
    rules: Sequence[Rule]  # patterns in its error text, first match wins
    explanations: Mapping[ErrorKind, Explain]  # the recognised kinds, in plain words
    # How an unrecognised failure reads when no exit code is known (an error result
    # event), and when neither an exit code nor any error text is.
    ended: str
    no_answer: str
    # Exit codes that say more than the error text: a kind the text did not reveal,
    # or the explanation of a failure no rule recognised.
    kind_by_exit_code: Mapping[int, ErrorKind] = field(default_factory=dict)
    explanation_by_exit_code: Mapping[int, Explain] = field(default_factory=dict)

    def classify(self, text: str) -> ErrorKind:
        return classify(text, self.rules)

    def from_stderr(self, exit_code: int | None, stderr_tail: str) -> AgentError:
        """The error for a run that ended without a result event."""
        kind = self.classify(stderr_tail)
        if kind is ErrorKind.AGENT and exit_code is not None:
            kind = self.kind_by_exit_code.get(exit_code, kind)
        return AgentError(kind=kind, message=self.message(kind, stderr_tail, exit_code))

    def message(self, kind: ErrorKind, text: str, exit_code: int | None) -> str:
        """Plain words for a failure of ``kind``; ``text`` is what the agent said."""
        if kind is ErrorKind.EGRESS_BLOCKED:
            # the agent's words (auth, model list) are side effects of the block
            return EGRESS_BLOCKED_MESSAGE
        if kind is ErrorKind.UNREACHABLE:
            return unreachable_message(text)
        explain = self.explanations.get(kind)
        if explain is not None:
            return explain(text)
        if exit_code is None:
            ended = self.ended
        else:
            explain = self.explanation_by_exit_code.get(exit_code)
            if explain is not None:
                return explain(text)
            ended = exit_phrase(self.agent, exit_code)
        excerpt = stderr_excerpt(text)
        if excerpt:
            return f"{ended}: {excerpt}"
        return f"{ended} without an answer" if exit_code is not None else self.no_answer
