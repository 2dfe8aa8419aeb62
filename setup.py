"""The one C extension: the SIP workers' native frame port (sipworker/native.py).

Everything else is in pyproject.toml.  ``optional``: without a C compiler the install still works
and the workers use pjsua2's Python frame ports.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sipworker._rtport", ["sipworker/_rtport.c"], optional=True)])
