"""Bounds on the windowed label counts: tags come from untrusted text, so their number is capped."""

from __future__ import annotations

from datetime import datetime, timedelta

OTHER_TAG = "(other)"  # what tags past the cap of a window are counted under


class WindowTags:
    """The tags counted in each open window, at most `max_tags` per window; windows older than
    `expires` are forgotten. Without the cap, per-key state would grow with whatever producers invent."""

    def __init__(self, max_tags: int, expires: timedelta) -> None:
        self.max_tags = max_tags
        self.expires = expires
        self._windows: dict[datetime, set[str]] = {}

    def admit(self, tag: str, window: datetime) -> str:
        """`tag` if the window counts it already or has room for it, else :data:`OTHER_TAG`."""
        for old in [w for w in self._windows if w < window - self.expires]:
            del self._windows[old]
        tags = self._windows.setdefault(window, set())
        if tag in tags or len(tags) < self.max_tags:
            tags.add(tag)
            return tag
        return OTHER_TAG

    def __len__(self) -> int:
        """Tags held over all open windows."""
        return sum(len(tags) for tags in self._windows.values())
