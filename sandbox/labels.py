"""Docker labels that identify what askbox started.

Every sandbox container carries ``SANDBOX`` (its value is the deployment, from
``ASKBOX_DEPLOYMENT``); nothing else does. The egress proxy
carries ``EGRESS`` instead so the reaper never touches it.
"""

SANDBOX = "askbox.sandbox"
RUN_ID = "askbox.run"
OWNER = "askbox.owner"  # "<hostname>:<pid>:<process start time>" of the process that runs it
DEADLINE = "askbox.deadline"  # unix time after which the run is dead whatever its owner says
EGRESS = "askbox.egress"
EGRESS_ROOT = "askbox.egress.root"  # the socket directory a proxy serves
EGRESS_DEPLOYMENT = "askbox.egress.deployment"  # the deployment (ASKBOX_DEPLOYMENT) it serves
EGRESS_ALLOW = "askbox.egress.allow"  # its allowlist, comma-separated: its squid.conf is made from it
WORKER = "askbox.worker"  # the RQ worker whose question a sandbox runs (jobs/ sets it)
PREFIX = "askbox."
