"""`chat`: the command-line client — follow a room, send, stream stdin, read history, edit,
delete, react, search.

    chat tail ROOM [--after SEQ] [--events] [--json]   follow; resumes across disconnects
    chat send ROOM TEXT [--thread SEQ]        TEXT "-" reads stdin; prints the seq
    chat stream ROOM [--chunk]                stdin becomes one streamed message
    chat history ROOM [--before SEQ] [--limit N] [--json]
    chat edit ROOM SEQ TEXT                   TEXT "-" reads stdin; prints the edit's seq
    chat delete ROOM SEQ                      prints the deletion's seq
    chat react ROOM SEQ EMOJI [--remove]      prints the reaction's seq (nothing if unchanged)
    chat search QUERY [--room ROOM] [--limit N] [--json]

The server comes from `--url` / `CHAT_URL` (default http://127.0.0.1:8080), the API token from
`--token` / `CHAT_TOKEN` (`chatserver user token NAME` prints one). Exit status: 0 done,
1 a server or network error (one line on stderr naming it), 2 usage, 130 interrupted (Ctrl-C).
docs/client.md has examples.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import orjson

from chatserver.client import (
    AuthenticationFailed,
    ChatClient,
    ChatClientError,
    Event,
    Message,
    RetryLater,
    SearchResult,
    TooLarge,
    Unreachable,
    websocket_url,
)

DEFAULT_URL = "http://127.0.0.1:8080"
CONNECT_TIMEOUT = 10.0
HISTORY_PAGE = 200  # the server's largest page
SEARCH_PAGE = 50  # the server's largest search page
CHUNK_BYTES = 65536
STDIN_QUEUE = 64  # pieces read ahead of the network: bounds memory for a fast producer
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141
TOKEN_HELP = ("pass --token or set CHAT_TOKEN (an admin prints one with "
              "`chatserver user token NAME`)")


class UsageError(Exception):
    """Bad arguments or environment: exit 2 with the message."""


# -- arguments --------------------------------------------------------------------------------


def _seq(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive(raw: str) -> int:
    value = _seq(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    # The connection options are accepted before or after the subcommand; SUPPRESS keeps a
    # subcommand's unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"server URL (env CHAT_URL; default {DEFAULT_URL})")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="API token (env CHAT_TOKEN; `chatserver user token NAME`)")
    common.add_argument("--connect-timeout", type=_seconds, default=argparse.SUPPRESS,
                        metavar="SECONDS",
                        help=f"give up connecting after this long (default {CONNECT_TIMEOUT:g})")
    parser = argparse.ArgumentParser(
        prog="chat", parents=[common], description="Command-line client for chatserver.",
        epilog="Exit status: 0 ok, 1 server or network error, 2 usage, 130 interrupted.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tail = commands.add_parser("tail", parents=[common],
                               help="follow a room's messages (resumes across disconnects)")
    tail.add_argument("room")
    tail.add_argument("--after", type=_seq, metavar="SEQ",
                      help="first print the stored messages after this seq")
    tail.add_argument("--events", action="store_true",
                      help="also print edits, deletions and reactions (every line has a seq)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")

    send = commands.add_parser("send", parents=[common], help="send one message; prints its seq")
    send.add_argument("room")
    send.add_argument("text", help='the message; "-" reads it from stdin')
    send.add_argument("--thread", type=_positive, metavar="SEQ",
                      help="reply in the thread of this top-level message")

    stream = commands.add_parser(
        "stream", parents=[common],
        help="stream stdin into a room as one message; prints its seq at EOF")
    stream.add_argument("room")
    stream.add_argument("--chunk", action="store_true",
                        help="send input as it arrives instead of line by line")

    history = commands.add_parser("history", parents=[common], help="print stored messages")
    history.add_argument("room")
    history.add_argument("--before", type=_seq, metavar="SEQ",
                         help="messages before this seq (default: the latest)")
    history.add_argument("--limit", type=_positive, default=50, metavar="N",
                         help="how many messages (default 50)")
    history.add_argument("--json", action="store_true", help="one JSON object per line")

    edit = commands.add_parser("edit", parents=[common],
                               help="replace a message's text; prints the edit's seq")
    edit.add_argument("room")
    edit.add_argument("seq", type=_positive, help="the message's seq")
    edit.add_argument("text", help='the new text; "-" reads it from stdin')

    delete = commands.add_parser("delete", parents=[common],
                                 help="delete a message; prints the deletion's seq")
    delete.add_argument("room")
    delete.add_argument("seq", type=_positive, help="the message's seq")

    react = commands.add_parser(
        "react", parents=[common],
        help="add (or --remove) a reaction; prints its seq, nothing when nothing changed")
    react.add_argument("room")
    react.add_argument("seq", type=_positive, help="the message's seq")
    react.add_argument("emoji", help="one emoji, or a :short_name:")
    react.add_argument("--remove", action="store_true", help="take the reaction back")

    search = commands.add_parser("search", parents=[common],
                                 help="full-text search of the rooms you may read")
    search.add_argument("query", help='words (all must match), "phrases", prefix*')
    search.add_argument("--room", help="search this room only")
    search.add_argument("--limit", type=_positive, default=20, metavar="N",
                        help="how many results (default 20)")
    search.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _client(args: argparse.Namespace) -> ChatClient:
    url = getattr(args, "url", None) or os.environ.get("CHAT_URL") or DEFAULT_URL
    token = getattr(args, "token", None) or os.environ.get("CHAT_TOKEN")
    if not token:
        raise UsageError(f"no API token: {TOKEN_HELP}")
    try:
        ws_url = websocket_url(url)
    except ValueError as exc:
        raise UsageError(f"--url/CHAT_URL: {exc}") from None
    return ChatClient(ws_url, token, connect_timeout=getattr(args, "connect_timeout",
                                                             CONNECT_TIMEOUT))


# -- output ------------------------------------------------------------------------------------

# Message text is untrusted: control characters (terminal escape sequences among them) are
# shown escaped, and a newline as \n, so each message stays one line.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\\"): "\\\\"})
del _ESCAPES[ord("\t")]


def _local_time(ts: str) -> str:
    try:
        return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return ts


def format_message(message: Message) -> str:
    """One line: local time, user, text (escaped), and `[aborted]` for a cut-off stream."""
    line = f"{_local_time(message['ts'])} {message['user']}: {message['text'].translate(_ESCAPES)}"
    return line + (" [aborted]" if message.get("aborted") else "")


def format_event(event: Event) -> str:
    """One line of `tail --events`: `#seq` first, then the message as `format_message` shows
    it, or what happened to message `#target` (deletions and reactions carry no time)."""
    if event["op"] == "message":
        return f"#{event['seq']} {format_message(event)}"
    head = f"#{event['seq']}"
    if event["op"] == "edited":
        return (f"{head} {_local_time(event['edited'])} {event['user']} edited "
                f"#{event['target']}: {event['text'].translate(_ESCAPES)}")
    if event["op"] == "deleted":
        return f"{head} {event['user']} deleted #{event['target']}"
    emoji = event["emoji"].translate(_ESCAPES)
    if event["added"]:
        return f"{head} {event['user']} reacted {emoji} to #{event['target']}"
    return f"{head} {event['user']} removed {emoji} from #{event['target']}"


def snippet_text(snippet: str) -> str:
    """A search snippet (escaped HTML, matches in <mark>) as plain text, escaped as message
    text is. Only <mark> is markup there (the text itself is escaped), so no other tag is
    stripped and only &amp; &lt; &gt; are unescaped (`&amp;` last: `&amp;lt;` is `&lt;`)."""
    plain = snippet.replace("<mark>", "").replace("</mark>", "")
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return plain.translate(_ESCAPES)


def format_result(result: SearchResult) -> str:
    """One line: room, seq, local time, user, and the snippet as plain text."""
    return (f"{result['room']} {result['seq']} {_local_time(result['ts'])} {result['user']}: "
            f"{snippet_text(result['snippet'])}")


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a follower reads each line as it comes, through a pipe too


def _print_message(message: Message, as_json: bool) -> None:
    _print_line(orjson.dumps(message).decode() if as_json else format_message(message))


# -- stdin ------------------------------------------------------------------------------------


class TrailingNewlines:
    """Holds back newlines at the end of what was fed until more text follows, so a stream
    of lines is not stored with the input's final newline (a delta cannot be taken back)."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, text: str) -> str:
        combined = self.held + text
        kept = combined.rstrip("\r\n")
        self.held = combined[len(kept):]
        return kept


async def _stdin_pieces(chunked: bool) -> AsyncIterator[str]:
    """Decoded pieces of stdin: whole lines, or whatever each read returns with `chunked`.

    A daemon thread reads (a blocking read cannot be cancelled, and must not keep a Ctrl-C'd
    process alive); a bounded queue makes it wait for the network."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(STDIN_QUEUE)

    def pump() -> None:
        stdin = sys.stdin.buffer
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK_BYTES) if chunked else stdin.readline()
            except (OSError, ValueError):
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return  # the loop has gone
            if not data:
                return

    threading.Thread(target=pump, name="chat-stdin", daemon=True).start()
    # Invalid UTF-8 becomes U+FFFD rather than losing the rest of a bot's output.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        data = await queue.get()
        text = decoder.decode(data, final=not data)
        if text:
            yield text
        if not data:
            return


def _read_all_stdin() -> str:
    return sys.stdin.buffer.read().decode("utf-8", errors="replace")


# -- subcommands ------------------------------------------------------------------------------


async def tail(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.join(args.room, args.after)
        if args.events:
            async for event in client.events():
                _print_line(orjson.dumps(event).decode() if args.json else format_event(event))
        else:
            async for message in client.messages():
                _print_message(message, args.json)
    return EXIT_OK


def _text_arg(args: argparse.Namespace, what: str) -> str:
    """The TEXT argument, or stdin without its final newline for "-"; never empty."""
    text = _read_all_stdin().rstrip("\r\n") if args.text == "-" else args.text
    if not text:
        raise UsageError(f"nothing to {what}: the text is empty"
                         + (" (stdin was empty)" if args.text == "-" else ""))
    return text


async def send(args: argparse.Namespace) -> int:
    client = _client(args)
    text = _text_arg(args, "send")
    async with client:
        ack = await client.send(args.room, text, thread=args.thread)
    print(ack["seq"])
    return EXIT_OK


async def edit(args: argparse.Namespace) -> int:
    client = _client(args)
    text = _text_arg(args, "edit")
    async with client:
        ack = await client.edit(args.room, args.seq, text)
    print(ack["seq"])
    return EXIT_OK


async def delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        ack = await client.delete(args.room, args.seq)
    print(ack["seq"])
    return EXIT_OK


async def react(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        ack = await client.react(args.room, args.seq, args.emoji, remove=args.remove)
    if "seq" in ack:
        print(ack["seq"])
    else:  # the wanted state holds already: not an error
        had = "no such reaction to remove" if args.remove else "that reaction already"
        print(f"chat: nothing changed: you had {had}", file=sys.stderr)
    return EXIT_OK


async def search(args: argparse.Namespace) -> int:
    client = _client(args)
    results: list[SearchResult] = []
    cursor: str | None = None
    try:
        while len(results) < args.limit:  # ranked pages, following `next`
            page = await client.search(args.query, room=args.room, before=cursor,
                                       limit=min(args.limit - len(results), SEARCH_PAGE))
            results += page["results"]
            cursor = page["next"]
            if cursor is None or not page["results"]:
                break
    finally:
        await client.close()
    for result in results:
        _print_line(orjson.dumps(result).decode() if args.json else format_result(result))
    return EXIT_OK


async def stream(args: argparse.Namespace) -> int:
    newlines = TrailingNewlines()
    async with _client(args) as client:
        async with client.stream(args.room) as streamed:
            async for piece in _stdin_pieces(args.chunk):
                await streamed.write(newlines.feed(piece))
    if streamed.ack is None:
        print("chat: stdin was empty: nothing was stored", file=sys.stderr)
        return EXIT_ERROR
    print(streamed.ack["seq"])
    return EXIT_OK


async def history(args: argparse.Namespace) -> int:
    client = _client(args)
    pages: list[list[Message]] = []
    remaining, before = args.limit, args.before
    try:
        while remaining > 0:  # newest first, paging back
            page = await client.history(args.room, before=before,
                                        limit=min(remaining, HISTORY_PAGE))
            messages = page["messages"]
            pages.insert(0, messages)
            remaining -= len(messages)
            if not page["more"] or not messages:
                break
            before = messages[0]["seq"]
    finally:
        await client.close()
    for messages in pages:
        for message in messages:
            _print_message(message, args.json)
    return EXIT_OK


COMMANDS = {"tail": tail, "send": send, "stream": stream, "history": history, "edit": edit,
            "delete": delete, "react": react, "search": search}


# -- errors and exit status ----------------------------------------------------------------


def describe(error: ChatClientError, args: argparse.Namespace) -> str:
    """The one line printed for an error: what went wrong and, where it helps, what to do."""
    if isinstance(error, AuthenticationFailed):
        return f"{error.message}: the token is wrong, revoked or its user disabled; {TOKEN_HELP}"
    if isinstance(error, Unreachable):
        return error.message
    if isinstance(error, TooLarge) and args.command == "stream":
        return f"{error}; the text so far is stored, marked aborted"
    if isinstance(error, RetryLater) and error.retry_after is not None:
        return f"{error} (retry after {error.retry_after:g} s)"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with argparse's message on bad usage
    # The client logs why it reconnects or gives up; a follower wants only the warnings.
    logging.basicConfig(level=logging.WARNING, format="chat: %(message)s")
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except UsageError as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ChatClientError as exc:
        print(f"chat: {describe(exc, args)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`chat tail room | head`): quietly, without a second error
        # when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
