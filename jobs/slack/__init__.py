"""Slack, seen from a worker (and, for the client and the blocks, from the bot).

- ``settings``: the worker's Slack section (``SlackSettings``);
- ``web_api``: the Web API client factory, one for the worker and the bot;
- ``budget``: the rate budget per workspace, shared by every process through Redis;
- ``calls``: a question's Web API calls, each admitted by that budget;
- ``mrkdwn``: agent Markdown as Slack mrkdwn, split at Slack's limits;
- ``blocks``: the status message with Cancel, feedback buttons, sections, footers;
- ``options``: timings and sizes of a question's thread;
- ``state``: what the parts below share: the thread (``SlackThread``), the agent's progress;
- ``progress``: live status-message edits and the assistant thread status;
- ``streaming``: the answer streamed into the thread (start, append, stop, rollover, recovery);
- ``upload``: a very long answer as ``answer.md``;
- ``thread_final``: the final message, the status message's last line, the reactions;
- ``thread_publisher``: ``SlackPublisher``, composing them, and ``slack_publisher_for``;
- ``agent_session``: the thread's Slack agent session (processing, active, closed; its title);
- ``status_owner``: who posts the status message, the bot after its ack or the worker;
- ``keep_alive``: the Web API client's kept-alive connections.
"""
