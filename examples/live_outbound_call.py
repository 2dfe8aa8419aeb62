"""Place an outbound GPT-Live phone call and follow it on the sideband, with the official SDK.

``POST /v1/live/sessions`` with a SIP transport makes the service dial ``--trunk`` (TLS, digest auth, SRTP);
the session's sideband then hears ``transport.ringing`` / ``transport.answered`` (or ``transport.failed``),
what the callee says and what the model answers. Against rtsip, the trunk is ``rtsip answer``; the real
service refuses loopback and private trunks, so this is the way to test an outbound flow offline.

    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-anything \\
        python examples/live_outbound_call.py --trunk sips:127.0.0.1:5071

The SDK types only WebRTC for ``client.live.create``; the SIP transport is sent as the API documents it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from openai import AsyncOpenAI, BadRequestError


def sip_transport(args: argparse.Namespace) -> dict[str, Any]:
    return {"type": "sip", "destination": args.to,
            "trunk": {"provider_url": args.trunk, "caller_number": args.caller,
                      "auth": {"type": "digest", "username": args.username, "password": args.password}}}


async def call(args: argparse.Namespace) -> int:
    client = AsyncOpenAI()  # OPENAI_BASE_URL / OPENAI_API_KEY from the environment
    try:
        created = await client.live.create(
            session={"model": "gpt-live-1.1", "instructions": "You call to confirm a policy number."},
            transport=sip_transport(args))  # type: ignore[arg-type]
    except BadRequestError as exc:
        print(f"refused: {exc.message}", file=sys.stderr)
        return 1
    session_id = created.session.id
    print(f"created {session_id}")
    heard = said = ""
    async with client.live.sideband.connect(session_id=session_id) as conn:
        async for event in conn:
            if event.type == "session.input_transcript.delta":
                heard += event.delta
            elif event.type == "session.output_transcript.delta":
                said += event.delta
                if said == args.until:  # the model finished its line: end the call
                    print(f"callee: {heard}\nmodel:  {said}")
                    await conn.session.close(event_id="done")
            elif event.type == "transport.failed":
                print(f"transport.failed {event.error.code}: {event.error.message}")
            elif event.type == "session.closed":
                print(f"session.closed {event.reason} after {event.usage.seconds:.0f} s")
                break
            elif event.type.startswith("transport.") or event.type == "session.started":
                print(event.type)
    await client.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trunk", required=True, help="the trunk's sips: URL, e.g. sips:127.0.0.1:5071")
    ap.add_argument("--to", default="+14155550123", help="the E.164 number to call")
    ap.add_argument("--caller", default="+18005550100", help="the E.164 number calling")
    ap.add_argument("--username", default="acct-42")
    ap.add_argument("--password", default="s3cret")
    ap.add_argument("--until", default="Sure, I can help you with that.",
                    help="hang up once the model has said this")
    return asyncio.run(call(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
