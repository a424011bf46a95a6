"""Version of shrink, and the installed versions of what it runs on (for plans and reports)."""

from __future__ import annotations

__version__ = "0.1.0"
