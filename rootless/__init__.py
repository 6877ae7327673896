"""rl: daemonless, rootless containers."""

__version__ = "0.1.0"
