"""A local stand-in for OpenAI's Realtime-over-SIP control plane and sessions."""

__version__ = "0.1.0"
