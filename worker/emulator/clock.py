"""The emulator's clock: real time plus an offset a test moves forward, so that a parking
queue's retention (60 s at least in SQS and moto) or a week of ageing passes in a moment. Every
time moto reads goes through `moto.core.utils.utcnow` (its `unix_time` reads it at each call):
that one function is wrapped, once per process. The offset only grows while a test runs and
goes back to zero with `MotoServer.reset` (the emulator is emptied then too)."""

from __future__ import annotations

import datetime
import threading
import time

_lock = threading.Lock()
_offset = 0.0
_installed = False


def install() -> None:
    """Wrap moto's clock (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from moto.core import utils

        real = utils.utcnow

        def utcnow() -> datetime.datetime:
            return real() + datetime.timedelta(seconds=_offset)

        utils.utcnow = utcnow
        _installed = True


def advance(seconds: float) -> None:
    """Move the emulator's time forward by `seconds`."""
    global _offset
    if seconds < 0:
        raise ValueError("the emulator's time only moves forward")
    with _lock:
        _offset += seconds


def reset() -> None:
    global _offset
    with _lock:
        _offset = 0.0


def now() -> float:
    """Epoch seconds as the emulator sees them."""
    return time.time() + _offset
