"""One message catalogue for the browser client, in English and Simplified Chinese.

The catalogues live in ``web/i18n/<lang>.json`` with identical key sets (a unit test checks
that). The server picks the language from ``Accept-Language`` unless the page URL overrides
it with ``?lang=en`` or ``?lang=zh-CN``, renders the page in it and hands the same messages to
the JavaScript, so the page and the script never disagree.

Language choice, decided once here:
- Every Chinese tag (``zh``, ``zh-CN``, ``zh-Hans``, ``zh-SG``, and also ``zh-TW``, ``zh-HK``,
  ``zh-Hant``) gets ``zh-CN``: there is no Traditional catalogue, and a reader of Traditional
  Chinese reads Simplified far more easily than English.
- Everything else gets English, which is also the default when nothing matches.
- Tags are weighed by their ``q`` value (ties keep header order); ``q=0`` means "not this".
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Final

SUPPORTED: Final = ("en", "zh-CN")
DEFAULT: Final = "en"

_DIR = Path(__file__).resolve().parent / "i18n"


def _match(tag: str) -> str | None:
    """The supported language a single language tag maps to, if any."""
    primary = tag.strip().lower().split("-", 1)[0]
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def _parse_accept_language(header: str) -> list[tuple[float, int, str]]:
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, *params = (p.strip() for p in part.split(";"))
        if not tag:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0.0:
            continue
        # Sort by descending q, then by position in the header.
        ranked.append((-q, position, tag))
    ranked.sort()
    return ranked


def choose_language(accept_language: str | None, override: str | None) -> str:
    """``"zh-CN"`` or ``"en"``: the override if it names a supported language, else the best
    supported match of ``Accept-Language``, else English."""
    if override:
        matched = _match(override)
        if matched is not None:
            return matched
    if accept_language:
        for _, _, tag in _parse_accept_language(accept_language[:1000]):
            if tag == "*":
                return DEFAULT
            matched = _match(tag)
            if matched is not None:
                return matched
    return DEFAULT


@cache
def _load(lang: str) -> MappingProxyType[str, str]:
    with (_DIR / f"{lang}.json").open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"catalogue {lang}.json must map strings to strings")
    return MappingProxyType(data)


def messages(lang: str) -> dict[str, str]:
    """The whole catalogue for ``lang`` (English for anything unsupported), as a fresh dict."""
    if lang not in SUPPORTED:
        lang = DEFAULT
    return dict(_load(lang))
