"""GPT-Live: the sans-I/O session core.

Adapters use :class:`~mock_api.live.session.LiveSession`, the outputs it returns
(:mod:`mock_api.live.outputs`) and the undocumented-behaviour choices
(:class:`~mock_api.live.settings.LiveSettings`). This package module imports none of them, so its
modules can import each other through it without a cycle.
"""
