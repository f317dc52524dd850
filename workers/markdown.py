"""Message Markdown -> sanitised HTML (PROTOCOL section 3, the `html` field).

`render` is a pure module-level function so a ProcessPoolExecutor can pickle it by reference;
the parser and the sanitiser are built once per process, at import, which is why the forkserver
preloads this module.

Two layers, on purpose: markdown-it with raw HTML off never emits a tag the author typed, and
nh3 (ammonia) then enforces an explicit allow-list, so a bug or a new rule in either one alone
cannot put a script, an event handler or a `javascript:` link into a message.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = [
    "MAX_MENTIONS", "render", "render_batch", "render_message", "sanitize", "unwrap_mentions",
    "warm_up",
]

# "js-default" is CommonMark plus GFM tables and strikethrough, with raw HTML off. `breaks`
# turns a single newline into <br>: chat users press Enter for a new line, as in Slack,
# Mattermost and Zulip, and do not expect CommonMark to join the lines into one paragraph.
_md = MarkdownIt("js-default", {"breaks": True})
_md.enable(["table", "strikethrough"])
# Images would make every reader's browser fetch a URL of the author's choosing: it leaks who
# read the message and when (a tracking pixel) to a third party. With the rule off,
# `![alt](url)` renders as "!" and a plain link the reader can choose to follow.
_md.disable("image")
# Each nesting level costs a pass; 100 levels of nested lists took 0.3 s for 16 KB. No chat
# message needs more than 20 (measured: the same input renders in under 1 ms).
_md.options["maxNesting"] = 20
# Linkify needs the optional linkify-it-py package; we do not depend on it, but use it if the
# deployment installed it.
if importlib.util.find_spec("linkify_it") is not None:
    _md.enable("linkify")
    _md.options["linkify"] = True

# Everything markdown-it can emit for the rules above, and nothing else. No <img> (see above),
# no <div>, no id attributes (they could clash with the page's own ids). The one <span> is a
# mention's (`render_message`), narrowed to class="mention" by _filter_attribute.
_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "span",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},  # narrowed to one "language-…" token by _filter_attribute
    "ol": {"start"},  # "3. item" starts the list at 3
    "span": {"class"},  # only class="mention" survives _filter_attribute
}
# markdown-it writes table alignment as style="text-align:…" (not the old align attribute).
# Rather than allowing `style`, allow exactly those three values.
_ALIGN = {"text-align:left", "text-align:center", "text-align:right"}
_TAG_ATTRIBUTE_VALUES = {"th": {"style": _ALIGN}, "td": {"style": _ALIGN}}
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")
_DIGITS = re.compile(r"[0-9]{1,9}")


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Keep a code block's language class and a list's numeric start; pass the rest through."""
    if tag == "code" and attribute == "class":
        return value if _LANGUAGE_CLASS.fullmatch(value) else None
    if tag == "ol" and attribute == "start":
        return value if _DIGITS.fullmatch(value) else None
    if tag == "span" and attribute == "class":
        return value if value == MENTION_CLASS else None
    return value


_cleaner = nh3.Cleaner(
    tags=_TAGS,
    attributes=_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    tag_attribute_values=_TAG_ATTRIBUTE_VALUES,
    url_schemes={"http", "https", "mailto"},
    # Relative URLs would resolve against wherever the HTML is shown (the web UI, a mail
    # notification, another client), so their meaning is not the author's to choose.
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def sanitize(html: str) -> str:
    """Reduce any HTML to the allow-list above; `render` applies it to markdown-it's output."""
    return str(_cleaner.clean(html))


# markdown-it scans forward from every "[" for the end of a link label, so a message of
# brackets is quadratic: 16 KB of "[" took 1.2 s, which one user could repeat at the send rate
# to stall everyone's rendering. Past this many brackets a message is not prose with links;
# its brackets render literally (escaped: 16 KB then takes about 40 ms).
_MAX_LINK_BRACKETS = 256


def render(text: str) -> str:
    """Render one message's Markdown to HTML that is safe to insert into a page."""
    if text.count("[") > _MAX_LINK_BRACKETS:
        text = text.replace("[", "\\[")
    return sanitize(_md.render(text))


def render_batch(texts: list[str]) -> list[str]:
    """Render several messages in one pool job, paying the round trip once (history exports)."""
    return [render(text) for text in texts]


# -- mentions (docs/protocol.md §10, "Mentions and read positions") ---------------------------

MENTION_CLASS = "mention"
MENTION_ROOM = "room"  # `@room`: everyone in the room; never a user's name
MAX_MENTIONS = 50  # distinct @names looked at per message, in order of first appearance
# `@` then a user name (§9 "Users"), not glued to a word, an address or another mention on
# the left (so "alice@example.com" is no mention) nor to a letter on the right ("@Bob" is not
# "@b"...). Trailing dots are sentence punctuation ("thanks @bob."), not part of the name.
_MENTION = re.compile(r"(?<![A-Za-z0-9_.@+-])@([a-z0-9][a-z0-9_.-]{0,31})(?![A-Za-z0-9_@-])")


def _mention_tokens(text: str, names: dict[str, None]) -> list[Token] | None:
    """`text` split into text and mention tokens (None when it holds no mention); new names
    are added to `names` (an ordered set) until it holds MAX_MENTIONS."""
    parts: list[Token] = []
    start = 0
    for match in _MENTION.finditer(text):
        name = match.group(1).rstrip(".")
        if not name:
            continue
        if name not in names:
            if len(names) >= MAX_MENTIONS:
                continue
            names[name] = None
        end = match.start() + 1 + len(name)
        if match.start() > start:
            parts.append(_text_token(text[start : match.start()]))
        # markdown-it escapes a text token's content; the name is [a-z0-9_.-] anyway.
        parts.append(_html_token(f'<span class="{MENTION_CLASS}">'))
        parts.append(_text_token("@" + name))
        parts.append(_html_token("</span>"))
        start = end
    if not parts:
        return None
    if start < len(text):
        parts.append(_text_token(text[start:]))
    return parts


def _text_token(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def _html_token(content: str) -> Token:
    # The renderer writes html_inline verbatim (raw HTML off only stops the *parser* from
    # making these); nh3 then keeps exactly <span class="mention">.
    token = Token("html_inline", "", 0)
    token.content = content
    return token


def render_message(text: str) -> tuple[str, list[str], bool]:
    """`render` plus the message's mentions: (html, names, mentions_room).

    Mentions are found in the parsed Markdown's text only, so `@bob` in a code span or a
    code block is code, not a mention, and the renderer's own knowledge of Markdown decides
    what is code. `names` are the distinct @names (lower case, first appearance first, at
    most MAX_MENTIONS, `room` excluded), whether or not such users exist: the caller looks
    them up and unwraps the ones that do not (`chatserver.mentions`). Each is wrapped in
    `<span class="mention">`. Text without mentions renders exactly as `render` renders it.
    """
    if "@" not in text:
        return render(text), [], False
    if text.count("[") > _MAX_LINK_BRACKETS:
        text = text.replace("[", "\\[")
    env: dict[str, object] = {}
    tokens = _md.parse(text, env)
    names: dict[str, None] = {}
    for block in tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        changed = False
        for child in block.children:
            split = _mention_tokens(child.content, names) if child.type == "text" else None
            if split is None:
                children.append(child)
            else:
                children.extend(split)
                changed = True
        if changed:
            block.children = children
    room = MENTION_ROOM in names
    names.pop(MENTION_ROOM, None)
    html = sanitize(_md.renderer.render(tokens, _md.options, env))
    return html, list(names), room


# One of each construct, so a warm-up render touches every rule's code path once.
_SAMPLE = (
    "# Title\n\n**bold** *em* ~~gone~~ `code` [link](https://example.com)\nnext line\n\n"
    "- item\n\n1. first\n\n> quote\n\n```python\nx = 1\n```\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n"
)


def warm_up(hold: float) -> int:
    """Render a sample once, stay busy `hold` seconds, and return this worker's process id.

    The executor runs one per worker at start-up: while every worker it has is held busy, the
    pool must start another for the next job, and the pids tell it when all have started.
    """
    render(_SAMPLE)
    time.sleep(hold)
    return os.getpid()


def unwrap_mentions(html: str, names: list[str]) -> str:
    """`render_message`'s html with the mentions of `names` (users that do not exist) back
    to plain text."""
    for name in names:
        html = html.replace(f'<span class="{MENTION_CLASS}">@{name}</span>', f"@{name}")
    return html
