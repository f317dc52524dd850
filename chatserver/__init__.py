"""chatserver: a self-hosted real-time chat server that stays fast under load."""

__version__ = "0.1.0"
