"""The one notion of time the policies share.

Every algorithm here takes a :data:`Clock` instead of reading time itself, so
tests step a fake clock and never sleep. In the server the clock is the event
loop's ``loop.time``: monotonic seconds with an arbitrary origin.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""Monotonic seconds. Only differences between two readings mean anything."""
