"""Pool workers: Markdown rendering is safe HTML (PROTOCOL section 3); passwords use argon2id."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from workers.markdown import render, render_batch, sanitize, warm_up
from workers.passwords import hash_password, needs_rehash, verify_password

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
    "span",  # a mention's, with class="mention" only (render_message)
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "span": {"class"},
    "a": {"href", "title", "rel"},
    "code": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}


class _Elements(HTMLParser):
    """Collects every element and attribute a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_comment(self, data: str) -> None:
        self.elements.append(("<!--", {}))


def assert_inert(html: str) -> None:
    """Fail unless `html` has only allowed tags and attributes and only safe link targets."""
    parser = _Elements()
    parser.feed(html)
    parser.close()
    for tag, attrs in parser.elements:
        assert tag in ALLOWED_TAGS, f"tag {tag} in {html!r}"
        assert set(attrs) <= ALLOWED_ATTRIBUTES.get(tag, set()), f"{tag} {attrs} in {html!r}"
        href = attrs.get("href")
        if href is not None:
            assert urlsplit(href).scheme in {"http", "https", "mailto"}, html
        if tag == "a":
            assert attrs.get("rel") == "noopener noreferrer nofollow", html
        if "style" in attrs:
            assert attrs["style"] in {"text-align:left", "text-align:center", "text-align:right"}
        if "class" in attrs and tag == "span":
            assert attrs["class"] == "mention", html
        elif "class" in attrs:
            assert re.fullmatch(r"language-[\w+#.-]+", attrs["class"] or ""), html


XSS = [
    ("script tag", "<script>alert(1)</script>"),
    ("script tag in a paragraph", "hello <script>alert(1)</script> world"),
    ("img onerror", "<img src=x onerror=alert(1)>"),
    ("markdown image", "![x](https://tracker.example/pixel.png)"),
    ("markdown image with onerror", '![x](x" onerror="alert(1))'),
    ("javascript link", "[x](javascript:alert(1))"),
    ("mixed-case javascript link", "[x](JaVaScRiPt:alert(1))"),
    ("entity-encoded javascript link", "[x](&#106;avascript:alert(1))"),
    ("javascript autolink", "<javascript:alert(1)>"),
    ("javascript reference link", "[x][r]\n\n[r]: javascript:alert(1)"),
    ("vbscript link", "[x](vbscript:msgbox(1))"),
    ("data url link", "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"),
    ("data url image", "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)"),
    ("raw html block", '<div onclick="alert(1)">\n\n*hi*\n\n</div>'),
    ("raw iframe", '<iframe src="https://evil.example"></iframe>'),
    ("event handler attribute", '<a href="https://x.example" onmouseover="alert(1)">x</a>'),
    ("svg onload", "<svg onload=alert(1)>"),
    ("style tag", "<style>body{display:none}</style>"),
    ("html comment", "<!-- <script>alert(1)</script> -->"),
    ("fenced code language injection", '```"><script>alert(1)</script>\nx\n```'),
    ("link title breaking out", '[x](https://a.example "t\\" onmouseover=\\"alert(1)")'),
]


@pytest.mark.parametrize("text", [x[1] for x in XSS], ids=[x[0] for x in XSS])
def test_render_never_emits_active_content(text: str) -> None:
    """No script, image, frame, event handler, or javascript:/data: URL survives rendering."""
    assert_inert(render(text))


@pytest.mark.parametrize(
    "html",
    [
        '<p onclick="alert(1)">x</p>',
        '<a href="https://ok.example" onclick="alert(1)" rel="opener">x</a>',
        '<a href="javascript:alert(1)">x</a>',
        '<a href="JAVASCRIPT:alert(1)">x</a>',
        '<a href="data:text/html,x">x</a>',
        '<img src="https://tracker.example/p.png">',
        "<script>alert(1)</script>",
        '<code class="language-py x" onclick="y">c</code>',
        '<code class="language-&quot;&gt;x">c</code>',
        '<ol start="1;x" type="a"><li>x</li></ol>',
        '<td style="text-align:left;position:fixed">x</td>',
        '<td style="background:url(https://tracker.example)">x</td>',
        '<div id="main"><span style="position:fixed">x</span></div>',
    ],
)
def test_sanitize_alone_blocks_active_content(html: str) -> None:
    """The sanitiser by itself removes what markdown-it should never produce (defence in depth)."""
    assert_inert(sanitize(html))


def test_raw_html_is_shown_as_text() -> None:
    """HTML the author types is escaped and shown, not interpreted."""
    assert render("<b>hi</b>") == "<p>&lt;b&gt;hi&lt;/b&gt;</p>\n"


def test_links_get_rel_noopener_noreferrer_nofollow() -> None:
    """Every link opens without giving the target page a handle on ours or a referrer."""
    html = render('[site](https://example.com/a?b=1 "Title")')
    assert html == (
        '<p><a href="https://example.com/a?b=1" title="Title" '
        'rel="noopener noreferrer nofollow">site</a></p>\n'
    )


def test_autolink_and_mailto() -> None:
    """Angle-bracket autolinks and mailto: links are kept."""
    html = render("<https://example.com> or [mail](mailto:a@example.com)")
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">' in html
    assert '<a href="mailto:a@example.com" rel="noopener noreferrer nofollow">mail</a>' in html


def test_relative_links_lose_their_href() -> None:
    """A relative URL has no meaning of the author's choosing, so only the text stays."""
    assert render("[x](/api/logout)") == '<p><a rel="noopener noreferrer nofollow">x</a></p>\n'


def test_markdown_image_becomes_a_link() -> None:
    """An image is not loaded for every reader; it shows as a link the reader may follow."""
    html = render("![cat](https://example.com/cat.png)")
    assert "<img" not in html
    link = '<a href="https://example.com/cat.png" rel="noopener noreferrer nofollow">cat</a>'
    assert html == f"<p>!{link}</p>\n"


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("hello", "<p>hello</p>\n"),
        ("**bold** *em* _em_", "<p><strong>bold</strong> <em>em</em> <em>em</em></p>\n"),
        ("~~gone~~", "<p><s>gone</s></p>\n"),
        ("`a < b`", "<p><code>a &lt; b</code></p>\n"),
        ("```python\nx = 1\n```", '<pre><code class="language-python">x = 1\n</code></pre>\n'),
        ("    indented", "<pre><code>indented\n</code></pre>\n"),
        ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"),
        ("1. a\n2. b", "<ol>\n<li>a</li>\n<li>b</li>\n</ol>\n"),
        ("3. a\n4. b", '<ol start="3">\n<li>a</li>\n<li>b</li>\n</ol>\n'),
        ("> quoted", "<blockquote>\n<p>quoted</p>\n</blockquote>\n"),
        ("# Title", "<h1>Title</h1>\n"),
        ("###### Small", "<h6>Small</h6>\n"),
        ("a\n\n---\n\nb", "<p>a</p>\n<hr>\n<p>b</p>\n"),
        ("line one\nline two", "<p>line one<br>\nline two</p>\n"),
        ("a & b", "<p>a &amp; b</p>\n"),
    ],
)
def test_markdown_basics(text: str, html: str) -> None:
    """Common chat Markdown renders as CommonMark does, with Enter as a line break."""
    assert render(text) == html


def test_table_keeps_only_alignment_styles() -> None:
    """GFM tables render, and their cells keep exactly the text-align style markdown-it emits."""
    html = render("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")
    assert html.startswith("<table>\n<thead>\n")
    assert "<tbody>" in html
    assert '<th style="text-align:left">a</th>' in html
    assert '<th style="text-align:center">b</th>' in html
    assert '<td style="text-align:right">3</td>' in html


def test_unicode_round_trips() -> None:
    """Non-ASCII text, emoji and right-to-left scripts pass through unchanged."""
    text = "Grüße, 日本語, emoji 🎉👍🏽, שלום, *überall*"
    assert render(text) == ("<p>Grüße, 日本語, emoji 🎉👍🏽, שלום, <em>überall</em></p>\n")


def test_huge_input_renders() -> None:
    """A 100 KB message of mixed Markdown renders, completely, in reasonable time."""
    block = "Some **bold** text with a [link](https://example.com) and `code`.\n- item\n\n"
    text = block * (100_000 // len(block) + 1)
    started = time.perf_counter()
    html = render(text)
    assert time.perf_counter() - started < 10
    assert len(text) >= 100_000
    assert html.count("<strong>bold</strong>") == text.count("**bold**")


def test_render_batch_matches_render() -> None:
    """render_batch returns, in order, what render returns for each text."""
    texts = ["*a*", "b", "<script>"]
    assert render_batch(texts) == [render(t) for t in texts]


def test_warm_up_reports_its_process() -> None:
    """warm_up renders its sample and returns the id of the process it ran in."""
    assert warm_up(0) == os.getpid()


def test_password_hash_is_argon2id_and_verifies() -> None:
    """A hash is argon2id with a random salt, and the right password verifies against it."""
    first = hash_password("correct horse battery staple")
    second = hash_password("correct horse battery staple")
    assert first.startswith("$argon2id$")
    assert first != second
    assert verify_password(first, "correct horse battery staple")
    assert not needs_rehash(first)


def test_wrong_password_is_false() -> None:
    """A wrong password gives False rather than an exception."""
    assert verify_password(hash_password("right"), "wrong") is False


@pytest.mark.parametrize(
    "bad_hash",
    ["", "garbage", "$argon2id$v=19$m=65536,t=3,p=4$short", "$2b$12$abcdefghijklmnopqrstuv"],
)
def test_garbage_hash_is_false(bad_hash: str) -> None:
    """A malformed or foreign hash never verifies and never raises, and needs rehashing."""
    assert verify_password(bad_hash, "anything") is False
    assert needs_rehash(bad_hash) is True


def test_unicode_password() -> None:
    """Non-ASCII passwords hash and verify like any other."""
    assert verify_password(hash_password("pässwörd🔑"), "pässwörd🔑")


def test_workers_import_nothing_of_the_server() -> None:
    """Importing the workers pulls in neither chatserver, asyncio nor aiohttp (cheap, loop-free)."""
    code = (
        "import sys, workers.markdown, workers.passwords; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'chatserver','asyncio','aiohttp'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert result.stdout.strip() == "[]"


def test_bracket_flood_renders_literally_instead_of_scanning_for_links() -> None:
    """A message with hundreds of '[' (quadratic for the link parser) shows its brackets as
    text, while ordinary messages keep their links."""
    html = render("[" * 5000 + " [x](https://example.com)")
    assert html.startswith("<p>" + "[" * 100) and "<a " not in html
    assert "<a " in render("[x](https://example.com) " + "[" * 10)


def test_list_nesting_is_capped() -> None:
    """Nesting deeper than 20 levels stops nesting (each level costs a pass over the text)."""
    html = render("- " * 60 + "x")
    assert html.count("<ul>") <= 21
