"""``rtsip env``: the environment an app needs to reach the running mock, as shell exports.

``rtsip mock`` writes what it serves into its state directory (``running.json``); this reads it, so
``eval "$(rtsip env)"`` in the app's shell points an SDK app at the mock (``OPENAI_BASE_URL``) or, with
``rtsip mock --intercept``, makes a hard-coded ``https://api.openai.com`` app go through the
interception proxy (``HTTPS_PROXY``, ``SSL_CERT_FILE``, ``NODE_EXTRA_CA_CERTS``, ...).
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from . import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "env", help="print the environment an app needs to reach the running mock (shell exports)",
        description="Print the environment variables an app needs to reach the `rtsip mock` that uses this state "
                    "directory: OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_WEBHOOK_SECRET, and with "
                    "`rtsip mock --intercept` the proxy and CA variables, with its TLS port the AZURE_OPENAI_*, "
                    "OPENAI_API_VERSION and SSL_CERT_FILE variables. Use: eval \"$(rtsip env)\".",
    )
    p.add_argument("--state-dir", default=None, help="the mock's state directory (env RTSIP_STATE_DIR)")
    p.add_argument("--format", choices=["sh", "dotenv", "json"], default="sh",
                   help="sh: export lines (default); dotenv: KEY=value lines; json: one object")
    p.set_defaults(func=cmd_env)


def cmd_env(args: argparse.Namespace) -> int:
    from mock_api.state import read_running, state_path

    sdir = state_path(args.state_dir)
    info = read_running(sdir)
    if info is None:
        raise UsageError(f"no rtsip mock is running with the state directory {sdir}; start one (`rtsip mock`, "
                         "with --intercept for apps that hard-code api.openai.com) or pass its --state-dir")
    print(render(info["env"], args.format))
    return 0


def render(env: dict[str, str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(env, indent=2, sort_keys=True)
    if fmt == "dotenv":
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(env.items()))
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))
