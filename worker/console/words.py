"""How the console says times and counts (Jinja filters): "3 h ago" with the time itself on
hover, "1 message" and "2 messages"."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from markupsafe import Markup, escape

from worker.ops.reading import age_text, plural

__all__ = ["ago", "plural"]


def ago(moment: str | float | None, now: float | None = None) -> Markup:
    """An ISO time (or epoch seconds) as `3h ago`, the time itself in the title; what is not
    a time, as it is."""
    if moment is None or moment == "":
        return Markup("")
    try:
        if isinstance(moment, int | float):
            epoch = float(moment)
        else:
            parsed = datetime.fromisoformat(str(moment))
            # a time without a zone is UTC, as everything the daemon writes
            epoch = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        return escape(str(moment))
    iso = moment if isinstance(moment, str) else datetime.fromtimestamp(epoch, UTC).isoformat()
    age = (time.time() if now is None else now) - epoch
    said = f"in {age_text(-age)}" if age < 0 else f"{age_text(age)} ago"
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(iso, said)
