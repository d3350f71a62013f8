"""gracerun: a PID-1 wrapper that stops containerised services without losing their work."""

__version__ = "0.1.0"
