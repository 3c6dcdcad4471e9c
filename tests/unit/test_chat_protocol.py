"""The chat message's limits as the protocol parses them: trimmed, 1-2,000 characters."""

from __future__ import annotations

import json

import pytest

from signaling import protocol as p


def _chat(text: object) -> str:
    return json.dumps({"type": "chat", "text": text})


def test_text_is_trimmed_and_kept_as_written() -> None:
    message = p.parse_client(_chat("  <b>hello</b> 你好 \n"))
    assert isinstance(message, p.Chat)
    assert message.text == "<b>hello</b> 你好"


def test_two_thousand_characters_is_the_limit_after_trimming() -> None:
    assert isinstance(p.parse_client(_chat("字" * 2000)), p.Chat)
    assert isinstance(p.parse_client(_chat("  " + "a" * 2000 + "  ")), p.Chat)
    with pytest.raises(p.ProtocolError) as too_long:
        p.parse_client(_chat("a" * 2001))
    assert (too_long.value.code, too_long.value.ref) == ("malformed", "chat")
    assert "2000" in too_long.value.message


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", None, 5, ["hi"]])
def test_empty_or_not_text_is_malformed(text: object) -> None:
    with pytest.raises(p.ProtocolError) as refused:
        p.parse_client(_chat(text))
    assert (refused.value.code, refused.value.ref) == ("malformed", "chat")


def test_whitespace_padding_is_bounded_before_it_is_trimmed() -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_client(_chat(" " * 5000 + "a"))


def test_the_server_side_messages_round_trip() -> None:
    entry = {"id": "msg_0123456789abcdef", "participantId": "p1", "name": "<script>",
             "role": "patient", "text": "<img src=x onerror=alert(1)>", "at": 1.5}  # fmt: skip
    parsed = p.parse_server(p.dump(p.ChatMessage(**entry)))
    assert isinstance(parsed, p.ChatMessage) and parsed.text == entry["text"]
    history = p.parse_server(p.dump(p.ChatHistory(messages=[p.ChatEntry(**entry)], more=True)))
    assert isinstance(history, p.ChatHistory) and history.more
