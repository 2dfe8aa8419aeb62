"""The locustfile rtsip ships: virtual callers against a running mock and the app under test.

    locust -f "$(python -m harness.locustfile)" --host http://127.0.0.1:8765 \\
        --rtsip-scenario scenarios/load/one_turn.yaml --rtsip-calls 100 -u 20 -r 5 --headless --csv load

Run as a module it prints its own path, for ``locust -f``, without importing Locust (whose gevent
patching must come before anything else imports ``ssl``). A locustfile of your own can import
:class:`harness.locust_users.VirtualCaller` (and subclass it, e.g. to set ``wait_time``) the same way.
"""

if __name__ == "__main__":
    print(__file__)
else:
    from harness.locust_users import VirtualCaller

    __all__ = ["VirtualCaller"]
