"""A scenario's app block names where the mock is: ``{port}``, ``{base_url}``, ``{ws_base}``, ... filled in."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

from harness.app_process import fill_placeholders, template_values
from harness.runner import run_scenario
from harness.scenario import load_scenario

# Writes what it was started with, answers the webhook 200 and never accepts (the call rings out).
APP = textwrap.dedent('''
    import json, os, sys
    from aiohttp import web
    keys = ("OPENAI_BASE", "REALTIME_WS_BASE", "MOCK", "HOOK", "CA", "PROXY", "PLAIN")
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in keys}},
              open(os.environ["DUMP"], "w"))
    async def hook(request):
        await request.read()
        return web.Response(status=200)
    async def health(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/hooks/openai", hook)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
''')


def test_placeholders_fill_only_known_names() -> None:
    values = template_values(8000, "http://127.0.0.1:9/v1", "http://127.0.0.1:8000/hook")
    assert values["ws_base"] == "ws://127.0.0.1:9/v1" and values["mock_origin"] == "http://127.0.0.1:9"
    assert fill_placeholders('{"port": {port}} {unknown} {base_url}', values) == \
        '{"port": 8000} {unknown} http://127.0.0.1:9/v1'


async def test_app_command_env_and_cwd_are_templated(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "app.py").write_text(APP)
    dump = tmp_path / "dump.json"
    scenario = tmp_path / "templated.yaml"
    scenario.write_text(textwrap.dedent(f"""\
        name: templated
        app:
          command: ["{{python}}", app.py, "{{port}}", "--hook={{webhook_url}}"]
          cwd: app
          webhook_path: /hooks/openai
          env:
            DUMP: {dump}
            OPENAI_BASE: "{{base_url}}"
            REALTIME_WS_BASE: "{{ws_base}}/realtime"
            MOCK: "{{mock_origin}}"
            HOOK: "{{webhook_url}}"
            CA: "{{ca}}"
            PROXY: "{{proxy}}"
            PLAIN: "{{not_a_placeholder}}"
        mock:
          ring_timeout_s: 1.5
        calls:
          - steps:
              - say: caller_greeting
        expect:
          call_state: no_answer
        """))
    result = await run_scenario(load_scenario(scenario))
    assert result.passed, result.verdict
    seen = json.loads(dump.read_text())
    port, hook = seen["argv"][0], seen["env"]["HOOK"]
    assert hook == f"http://127.0.0.1:{port}/hooks/openai" and seen["argv"][1] == f"--hook={hook}"
    base = seen["env"]["OPENAI_BASE"]
    assert base.startswith("http://127.0.0.1:") and base.endswith("/v1")
    assert seen["env"]["REALTIME_WS_BASE"] == "ws" + base.removeprefix("http") + "/realtime"
    assert seen["env"]["MOCK"] == base.removesuffix("/v1")
    assert (await asyncio.to_thread(Path(seen["env"]["CA"]).read_text)).startswith("-----BEGIN CERTIFICATE-----")
    assert seen["env"]["PROXY"] == ""  # no interception in this scenario
    assert seen["env"]["PLAIN"] == "{not_a_placeholder}"
    assert Path(seen["cwd"]) == (tmp_path / "app").resolve()
