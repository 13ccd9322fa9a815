"""Each gateway-fronted agent's start-up and footprint: the Gemini CLI, Claude Code and Codex
CLI, each in its own image in the real sandbox, talking through a real `askbox gateway`
session (socket bridge, per-question token) to its provider's fake.

Per agent, over N runs of one question (one tool step, then an answer):

- time to first LLM request: from the sandbox's start (``AgentSession.events()``) to the
  first model call the fake receives (both clocks are this process's);
- whole run: to the agent's terminal event;
- memory per sandbox: the container's cgroup peak, sampled as it runs (bench/scale.py's
  sampler).

Runs its own redis-server. Usage: python bench/agents.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)
from scale import DEPLOYMENT, Sampler  # noqa: E402  (bench/scale.py: the deployment label, the cgroup sampler)

from jobs.agent_runs import GATEWAY_MOUNT, GATEWAY_PORT  # noqa: E402
from sandbox import Sandbox, images  # noqa: E402
from sandbox.agents.adapters import AGENTS  # noqa: E402
from sandbox.agents.events import Result, is_terminal  # noqa: E402
from sandbox.agents.session import AgentSession  # noqa: E402
from sandbox.agents.settings import AgentSettings  # noqa: E402
from sandbox.bridges import SocketBridge  # noqa: E402
from sandbox.egress import EgressProxies  # noqa: E402
from sandbox.spec import Limits  # noqa: E402
from tests.fakes.anthropic_api import FakeAnthropicAPI  # noqa: E402
from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall  # noqa: E402
from tests.fakes.gemini_api import Text as GeminiText  # noqa: E402
from tests.fakes.llm_api import Text, ToolCall  # noqa: E402
from tests.fakes.openai_api import FakeOpenAIAPI  # noqa: E402
from tests.integration.gateway_helpers import GatewayProcess, provider_env  # noqa: E402
from tests.integration.pipeline_helpers import RedisServer  # noqa: E402

KEY = "bench-agents-real-key"
ANSWER = "The repository is a small demo: src/app.py holds answer(), which returns 42."
# agent -> (provider, a turn reading README.md with the agent's own tool)
AGENT_CASES = {
    "gemini": ("gemini", lambda: (FunctionCall("read_file", {"file_path": "README.md"}), GeminiText(ANSWER))),
    "claude": ("anthropic", lambda: (ToolCall("Read", {"file_path": "/workspace/README.md"}), Text(ANSWER))),
    "codex": ("openai", lambda: (ToolCall("exec_command", {"cmd": "cat README.md"}), Text(ANSWER))),
}


def fake_for(provider: str):  # type: ignore[no-untyped-def]
    return {"gemini": FakeGeminiAPI, "anthropic": FakeAnthropicAPI, "openai": FakeOpenAIAPI}[provider]()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parse_args(parser, runs=1)
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        (repo / "src").mkdir(parents=True)
        (repo / "README.md").write_text("# demo\n")
        (repo / "src" / "app.py").write_text("def answer():\n    return 42\n")
        egress = root / "egress"
        egress.mkdir(mode=0o755)
        egress.chmod(0o755)
        (root / "redis").mkdir()
        redis = RedisServer(root / "redis").start()
        proxies = EgressProxies(images.tag("egress-proxy"), egress, deployment=DEPLOYMENT)
        sandbox = Sandbox(client, proxies, deployment=DEPLOYMENT)
        rows = []
        try:
            for name, (provider, turns) in AGENT_CASES.items():
                fake = fake_for(provider)
                with fake:
                    upstream = fake.api_url if isinstance(fake, FakeOpenAIAPI) else fake.base_url
                    with (
                        GatewayProcess(provider_env(provider, upstream, [KEY], redis_url=redis.url)) as gateway,
                        Sampler(client) as sampler,
                    ):
                        first, whole, answered = [], [], 0
                        for _ in range(args.runs):
                            fake.script(*turns())
                            agent_class = AGENTS[name]
                            model = agent_class.default_model
                            session = gateway.open(model=model, provider=provider)
                            bridge = SocketBridge(
                                host_dir=session.socket_dir,
                                socket=session.socket.name,
                                port=GATEWAY_PORT,
                                mount_point=GATEWAY_MOUNT,
                            )
                            agent = agent_class(AgentSettings()).with_endpoint(
                                bridge.url, session.token.get_secret_value()
                            )
                            before = len(fake.requests)
                            run = AgentSession(
                                sandbox,
                                agent,
                                "What does this repository do?",
                                repo=repo,
                                limits=Limits(timeout=180),
                                egress_allow=(),
                                bridges=(bridge,),
                            )
                            started = time.monotonic()
                            terminal = None
                            for event in run.events():
                                if is_terminal(event):
                                    terminal = event
                            whole.append(time.monotonic() - started)
                            calls = fake.requests[before:]
                            if calls:
                                first.append(calls[0].received_at - started)
                            answered += isinstance(terminal, Result)
                            gateway.client.close(session)
                    peaks = [s.peak_bytes / 2**20 for s in sampler.seen.values() if s.kind == "sandbox"] or [0.0]
                rows.append((name, answered, first, whole, peaks))
        finally:
            proxies.stop_all(client)
            redis.stop()
    print(f"\nagents through the gateway, {args.runs} runs each (one tool step, then the answer)")
    print(
        f"{'agent':<8}{'answered':>9}{'first LLM request s p50':>25}{'whole run s p50':>17}{'memory peak MiB p50/max':>25}"
    )
    for name, answered, first, whole, peaks in rows:
        print(
            f"{name:<8}{answered:>5}/{args.runs:<3}{statistics.median(first or [0]):>25.2f}"
            f"{statistics.median(whole):>17.2f}{statistics.median(peaks):>17.0f} / {max(peaks):<6.0f}"
        )
    print("time to first LLM request and memory per sandbox, per agent")
    return 0 if all(answered == args.runs for _, answered, *_ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
