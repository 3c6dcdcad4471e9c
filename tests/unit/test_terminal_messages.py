"""Every refusal the terminal pages and consoles show is worded in both languages."""

from __future__ import annotations

import pytest

from signaling.console.terminals import _ADMIN_ERRORS
from web.i18n import SUPPORTED, messages


@pytest.mark.parametrize("lang", SUPPORTED)
def test_every_terminal_refusal_has_words(lang: str) -> None:
    t = messages(lang)
    for code in _ADMIN_ERRORS:
        assert t[f"console.error.terminal.{code}"]
    for code in ("not_paired", "revoked", "no_consultation"):
        assert t[f"desk.error.{code}"]
    for state in ("connecting", "online", "offline"):
        assert t[f"terminal.state.{state}"]
