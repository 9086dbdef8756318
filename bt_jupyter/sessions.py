"""How a job's interactive sessions read (``%bt_session``, the widget's text fallback):
one line per node, as the table ``truss train logs`` prints."""

from __future__ import annotations

from datetime import datetime, timezone

from bt_jupyter import api


def duration(seconds: float) -> str:
    """``1m 40s``, ``20m``, ``2h 30m``: a timeout as people write it."""
    left = max(0, round(seconds))
    parts = [(left // 3600, "h"), (left % 3600 // 60, "m"), (left % 60, "s")]
    return " ".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def expires_in(expires_at: str | None, now: datetime | None = None) -> str:
    """``7h59m``, ``12m``, ``< 1m``, ``expired``; empty when there is no expiry."""
    if not expires_at:
        return ""
    try:
        moment = datetime.fromisoformat(expires_at)
    except ValueError:
        return expires_at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    left = int((moment - (now or datetime.now(timezone.utc))).total_seconds())
    if left <= 0:
        return "expired"
    days, hours, minutes = left // 86400, left % 86400 // 3600, left % 3600 // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m" if minutes else "< 1m"


def session_line(code: api.AuthCodeV1) -> str:
    """``g00r0  4F64-C0D9  https://github.com/login/device  expires in 7h59m  /b10/workspace``"""
    parts = [code.replica_id, code.auth_code, code.auth_url]
    left = expires_in(code.expires_at)
    if left:
        parts.append(f"expires in {left}" if left != "expired" else left)
    if code.working_directory:
        parts.append(code.working_directory)
    return "  ".join(parts)
