"""The message catalogue: both languages complete, and the language choice documented in
web/i18n.py (every Chinese tag, Traditional included, gets zh-CN; everything else English)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from web.i18n import SUPPORTED, choose_language, messages

CATALOGUE_DIR = Path(__file__).resolve().parents[2] / "web" / "i18n"


def _raw(lang: str) -> dict[str, str]:
    return json.loads((CATALOGUE_DIR / f"{lang}.json").read_text(encoding="utf-8"))


def test_catalogues_have_identical_keys() -> None:
    en, zh = _raw("en"), _raw("zh-CN")
    assert set(en) == set(zh), {
        "only in en": sorted(set(en) - set(zh)),
        "only in zh-CN": sorted(set(zh) - set(en)),
    }


@pytest.mark.parametrize("lang", SUPPORTED)
def test_no_empty_strings(lang: str) -> None:
    empty = [k for k, v in _raw(lang).items() if not isinstance(v, str) or not v.strip()]
    assert empty == []


def test_placeholders_agree() -> None:
    en, zh = _raw("en"), _raw("zh-CN")
    for key in en:
        assert set(re.findall(r"\{(\w+)\}", en[key])) == set(re.findall(r"\{(\w+)\}", zh[key])), key


def test_roles_and_kinds_are_localized() -> None:
    zh = messages("zh-CN")
    assert zh["role.doctor"] == "医生"
    assert zh["role.expert"] == "专家"
    assert zh["role.patient"] == "患者"
    assert zh["role.observer"] == "旁听"
    for kind in ("one_to_one", "joint", "ward_round"):
        assert f"kind.{kind}" in zh


def test_messages_unknown_language_falls_back_to_english() -> None:
    assert messages("fr") == messages("en")
    m = messages("en")
    m["join.button"] = "changed"
    assert messages("en")["join.button"] == "Join"  # a copy, not the cached catalogue


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh-TW", "zh-CN"),  # decided: no Traditional catalogue; Simplified beats English
        ("zh-HK,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9", "en"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en;q=0.5,zh-CN;q=0.8", "zh-CN"),  # q wins over order
        ("fr-FR,fr;q=0.9", "en"),
        ("fr-FR,zh-CN;q=0.5", "zh-CN"),  # first supported one
        ("zh-CN;q=0,en;q=0.1", "en"),  # q=0 means not acceptable
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("garbage;;;q=x,,", "en"),
    ],
)
def test_choose_language_from_accept_language(header: str | None, expected: str) -> None:
    assert choose_language(header, None) == expected


@pytest.mark.parametrize(
    ("header", "override", "expected"),
    [
        ("zh-CN,zh;q=0.9", "en", "en"),
        ("en-US", "zh-CN", "zh-CN"),
        ("en-US", "zh-cn", "zh-CN"),
        ("en-US", "zh", "zh-CN"),
        ("zh-CN", "fr", "zh-CN"),  # unsupported override is ignored
        ("zh-CN", "", "zh-CN"),
        (None, "en", "en"),
    ],
)
def test_choose_language_override(header: str | None, override: str, expected: str) -> None:
    assert choose_language(header, override) == expected
