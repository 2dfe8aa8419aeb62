"""The locustfile rtsip ships for SIP callers: real SIP/TLS calls from a softphone pool per Locust process.

    locust -f "$(python -m harness.locustfile_sip)" --host http://127.0.0.1:8765 \\
        --rtsip-scenario scenarios/load/sip_two_way.yaml --rtsip-calls 24 -u 8 -r 4 --headless --csv load

The mock must run with its SIP ingress (``rtsip mock``, not ``--no-sip``) and room for ``-u`` calls (4 a
SIP worker, ``--sip-workers``). Run as a module it prints its own path, without importing Locust.
"""

if __name__ == "__main__":
    print(__file__)
else:
    from harness.locust_users import SipCaller

    __all__ = ["SipCaller"]
