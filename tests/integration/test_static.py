"""The web UI's static files: served right, wired together, and inserting no unsanitised HTML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatserver.app import STATIC_DIR
from tests.integration.conftest import Chat

JS_TYPES = {"application/javascript", "text/javascript"}
JS_FILES = sorted(p.name for p in Path(STATIC_DIR).glob("*.js"))
# The one HTML sink allowed: assigning a message's server-sanitised `html` field.
SAFE_INNER_HTML = re.compile(r"^\s*\w+\.innerHTML = \w+\.html;\s*$")
HTML_SINKS = ("outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment",
              "DOMParser", "srcdoc", "eval(", "new Function")
RELATIVE_IMPORT = re.compile(r"""\bfrom\s+["'](\./[^"']+)["']""")
ELEMENT_ID_USE = re.compile(r"""\$\(\s*["']([\w-]+)["']\s*\)""")


def _source(name: str) -> str:
    return (Path(STATIC_DIR) / name).read_text(encoding="utf-8")


def test_the_ui_modules_exist() -> None:
    """The UI ships its entry module and its separate connection module."""
    assert {"app.js", "connection.js"} <= set(JS_FILES)
    assert (Path(STATIC_DIR) / "index.html").is_file()
    assert (Path(STATIC_DIR) / "style.css").is_file()


async def test_root_serves_html_that_loads_app_js_as_a_module(chat: Chat) -> None:
    """`GET /` answers with HTML whose script tag loads /static/app.js as an ES module."""
    response = await chat.client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    body = await response.text()
    scripts = re.findall(r"<script\b[^>]*>", body)
    assert any('type="module"' in tag and 'src="/static/app.js"' in tag for tag in scripts)
    assert 'href="/static/style.css"' in body


@pytest.mark.parametrize("name", JS_FILES)
async def test_static_js_is_served_with_a_javascript_content_type(chat: Chat, name: str) -> None:
    """Each static JS file is served with a JavaScript MIME type, as module scripts require."""
    response = await chat.client.get(f"/static/{name}")
    assert response.status == 200
    assert response.content_type in JS_TYPES
    assert await response.text() == _source(name)


async def test_stylesheet_is_served_as_css(chat: Chat) -> None:
    """The stylesheet is served with the text/css type browsers insist on."""
    response = await chat.client.get("/static/style.css")
    assert response.status == 200
    assert response.content_type == "text/css"


@pytest.mark.parametrize("name", JS_FILES)
def test_relative_imports_resolve_to_shipped_modules(name: str) -> None:
    """Every relative import in a static module names a module that ships next to it."""
    for target in RELATIVE_IMPORT.findall(_source(name)):
        assert (Path(STATIC_DIR) / target).is_file(), f"{name} imports missing {target}"


def test_element_ids_used_by_scripts_exist_in_the_page() -> None:
    """Every element id the scripts look up with $("…") is defined in index.html."""
    page = _source("index.html")
    ids = set(re.findall(r'\bid="([\w-]+)"', page))
    used = {(name, ident) for name in JS_FILES for ident in ELEMENT_ID_USE.findall(_source(name))}
    assert used, "expected the scripts to look up elements by id"
    assert not {ident for _, ident in used} - ids


@pytest.mark.parametrize("name", JS_FILES)
def test_only_the_sanitised_html_field_is_assigned_to_inner_html(name: str) -> None:
    """The only innerHTML write in the UI assigns a message's server-sanitised `.html` field."""
    lines = _source(name).splitlines()
    for line in lines:
        if "innerHTML" in line:
            assert SAFE_INNER_HTML.match(line), f"{name}: unsafe innerHTML use: {line.strip()}"
        for sink in HTML_SINKS:
            assert sink not in line, f"{name}: {sink} is not allowed: {line.strip()}"


def test_exactly_one_inner_html_assignment_across_the_ui() -> None:
    """Across all static modules there is exactly one innerHTML assignment, of a `.html` field."""
    uses = [line.strip() for name in JS_FILES for line in _source(name).splitlines()
            if "innerHTML" in line]
    assert len(uses) == 1 and uses[0].endswith(".innerHTML = message.html;"), uses
    # The entry module and the connection module insert no HTML at all.
    assert "innerHTML" not in _source("app.js")
    assert "innerHTML" not in _source("connection.js")
