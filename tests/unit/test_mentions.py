"""Mentions (docs/protocol.md §10): found by the Markdown worker in a message's text (never in
code), capped, linked in the html, and resolved to existing users before the message is
stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatserver import mentions
from chatserver.config import PoolsConfig
from chatserver.executors import Executors
from chatserver.store.base import Mention
from chatserver.store.sqlite import SqliteStore
from tests.unit.test_workers import XSS, assert_inert
from workers.markdown import MAX_MENTIONS, render, render_message, sanitize, unwrap_mentions


def test_names_and_room_are_found_in_text_and_linked() -> None:
    """@names (in order of first appearance, once each) and @room are found and each wrapped
    in <span class="mention">; @room is not a name."""
    html, names, room = render_message("hi @bob and @carol, @bob again; @room **@dave**")
    assert names == ["bob", "carol", "dave"]
    assert room is True
    assert html.count('<span class="mention">@bob</span>') == 2
    assert '<strong><span class="mention">@dave</span></strong>' in html
    assert '<span class="mention">@room</span>' in html


def test_code_spans_and_blocks_hold_no_mentions() -> None:
    """@names inside a code span, an indented code block or a fence are code, not mentions."""
    html, names, room = render_message("`@bob` and\n\n    @carol\n\n```\n@room @dave\n```\n@eve")
    assert (names, room) == (["eve"], False)
    assert "<code>@bob</code>" in html
    assert "@dave" in html and '<span class="mention">@dave' not in html


def test_addresses_and_non_names_are_not_mentions() -> None:
    """An e-mail address, an upper-case @Name (names are lower case), a bare @ and @@x are
    not mentions; a sentence's final dot is not part of the name."""
    html, names, room = render_message("mail a@bob.com, @Bob, @ alone, @@x. thanks @carol.")
    assert (names, room) == (["carol"], False)
    assert html.endswith('thanks <span class="mention">@carol</span>.</p>\n')


def test_at_most_max_mentions_distinct_names_are_taken() -> None:
    """Past MAX_MENTIONS distinct names the rest are plain text."""
    text = " ".join(f"@user{i}" for i in range(MAX_MENTIONS + 5))
    html, names, _ = render_message(text)
    assert names == [f"user{i}" for i in range(MAX_MENTIONS)]
    assert html.count('class="mention"') == MAX_MENTIONS
    assert f"@user{MAX_MENTIONS}" in html


def test_text_without_mentions_renders_as_render_does() -> None:
    """Without an @name the html is exactly `render`'s."""
    for text in ("plain", "**bold** `@code`", "a@b.com", "# title\n\n- item"):
        assert render_message(text)[0] == render(text)


def test_only_the_mention_span_survives_the_sanitiser() -> None:
    """Authors cannot smuggle other spans or classes: only class="mention" is kept."""
    assert sanitize('<span class="mention">@x</span>') == '<span class="mention">@x</span>'
    assert sanitize('<span class="evil" style="x">y</span>') == "<span>y</span>"
    assert render_message("<span class='mention'>@bob</span>")[0].count("<span") == 1


def test_unwrap_returns_unknown_names_to_plain_text() -> None:
    """unwrap_mentions turns the given names' spans back into plain @name text."""
    html, _, _ = render_message("@bob @nobody")
    assert unwrap_mentions(html, ["nobody"]) == '<p><span class="mention">@bob</span> @nobody</p>\n'


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "chat.db"))
    await opened.open()
    yield opened
    await opened.close()


async def test_render_keeps_existing_users_only(store: SqliteStore) -> None:
    """chatserver.mentions.render drops unknown names (unlinking them) and sorts the rest."""
    carol = await store.create_user("carol", "x")
    bob = await store.create_user("bob", "x")
    executors = Executors(PoolsConfig(threads=1, processes=0))
    await executors.start()
    try:
        rendered = await mentions.render(executors, store, "@nobody @carol @bob @room")
        plain = await mentions.render(executors, store, "no mentions here")
    finally:
        await executors.close()
    assert rendered.mentions == (Mention(bob.id, "bob"), Mention(carol.id, "carol"))
    assert rendered.mentions_room is True
    assert "@nobody" in rendered.html and '"mention">@nobody' not in rendered.html
    assert plain == mentions.Rendered("<p>no mentions here</p>\n")


@pytest.mark.parametrize(("name", "text"), XSS)
def test_rendering_with_mentions_stays_inert(name: str, text: str) -> None:
    """Every XSS payload that `render` neutralises stays neutralised next to mentions."""
    assert_inert(render_message(f"@bob {text} @room")[0])
