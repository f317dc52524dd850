"""The UI's performance measurements, shared by tests/browser/test_performance.py (loose
bounds) and scripts/bench_ui (numbers): in-page timers only (performance.now, animation
frames, the long-task PerformanceObserver), so the test process's own speed does not count.

- history: from a click on a room not opened before to 500 messages of its history in the DOM
  and the frame after painted (the UI joins, then fetches pages of 200 and renders each);
- flood: while the open room receives messages at a fixed rate, the gaps between animation
  frames (a frozen page has none) and the long tasks (> 50 ms), and whether all arrived.
"""

from __future__ import annotations

import statistics
from typing import Any

from tests.browser.ui import MESSAGES, ChatServer, RawSocket

HISTORY_SIZE = 500
FLOOD_RATE = 100  # messages per second
FLOOD_SECONDS = 5.0

# Click the room's button, then check once per animation frame until `size` messages are in
# and the room is no longer busy; one more frame so the last insertion has been painted.
HISTORY_PROBE = """async ([room, size, selector]) => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const count = () => document.querySelectorAll(selector).length;
  const busy = () => document.getElementById("message-scroller").getAttribute("aria-busy");
  const start = performance.now();
  document.querySelector(`#room-list button[data-room="${room}"]`).click();
  let first = null;
  for (;;) {
    await frame();
    const n = count();
    if (first === null && n > 0) first = performance.now() - start;
    if (n >= size && busy() === "false") break;
    if (performance.now() - start > 30000) throw new Error(`only ${n} of ${size} rendered`);
  }
  await frame();
  // The UI's own marks on the way (room:open, room:joined, room:fetched, room:rendered).
  const marks = Object.fromEntries(performance.getEntriesByType("mark")
    .filter((mark) => mark.name.startsWith("room:") && mark.startTime >= start)
    .map((mark) => [mark.name, mark.startTime - start]));
  return { ms: performance.now() - start, first_ms: first, count: count(), marks };
}"""

FRAMES_START = """() => {
  const probe = window.__uiperf = { gaps: [], longTasks: [], last: null, running: true };
  probe.observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) probe.longTasks.push(entry.duration);
  });
  probe.observer.observe({ type: "longtask" });
  const tick = (now) => {
    if (probe.last !== null) probe.gaps.push(now - probe.last);
    probe.last = now;
    if (probe.running) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""

FRAMES_STOP = """() => {
  const probe = window.__uiperf;
  probe.running = false;
  probe.observer.disconnect();
  return { gaps: probe.gaps, longTasks: probe.longTasks };
}"""

# The floor for the history numbers: the same messages, fetched once and appended as plain
# text nodes, nothing else (served by scripts/bench_ui next to the JSON).
BASELINE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>baseline</title>
<style>body{margin:0;font:15px/1.45 system-ui,sans-serif}#list{height:100vh;overflow-y:auto}
</style></head><body><ol id="list"></ol></body></html>"""

BASELINE_PROBE = """async (url) => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const start = performance.now();
  const { messages } = await (await fetch(url)).json();
  const list = document.getElementById("list");
  const fragment = document.createDocumentFragment();
  for (const message of messages) {
    const item = document.createElement("li");
    item.textContent = `${message.user}: ${message.text}`;
    fragment.append(item);
  }
  list.append(fragment);
  list.scrollTop = list.scrollHeight;
  await frame();
  await frame();
  return { ms: performance.now() - start, count: list.children.length };
}"""


def history_texts(count: int = HISTORY_SIZE) -> list[str]:
    """Chat-like texts, every fifth with Markdown (rendered html with markup to insert)."""
    return [f"**message {i}** with `code` and a [link](https://example.com/{i})" if i % 5 == 0
            else f"message {i}: the quick brown fox jumps over the lazy dog" for i in range(count)]


async def fill_room(server: ChatServer, sock: RawSocket, room: str,
                    count: int = HISTORY_SIZE) -> None:
    """`room` (new, public, made by the socket's user) with `count` messages."""
    await server.create_room("bob", room)
    await sock.send_many(room, history_texts(count))


async def measure_history(page: Any, room: str, size: int = HISTORY_SIZE) -> dict[str, Any]:
    """Open `room` (in the list, not opened before) by its button: {ms, first_ms, count}."""
    result: dict[str, Any] = await page.evaluate(HISTORY_PROBE, [room, size, MESSAGES])
    return result


async def measure_flood(page: Any, sock: RawSocket, room: str, *, rate: int = FLOOD_RATE,
                        seconds: float = FLOOD_SECONDS) -> dict[str, Any]:
    """Send `rate` messages/s for `seconds` to the page's open room; frame gaps, long tasks
    and the seqs that never appeared on the page (`missing`, which should be empty)."""
    count = int(rate * seconds)
    await page.evaluate(FRAMES_START)
    acks = await sock.send_many(room, [f"flood {i}" for i in range(count)], interval=1 / rate)
    last = acks[-1]["seq"]
    await page.wait_for_function(
        "(seq) => document.querySelector(`#message-list li[data-seq='${seq}']`) !== null",
        arg=last, timeout=30_000)
    frames = await page.evaluate(FRAMES_STOP)
    shown = set(await page.locator(MESSAGES).evaluate_all(
        "items => items.map((item) => Number(item.dataset.seq))"))
    gaps = sorted(frames["gaps"])
    return {
        "messages": count,
        "missing": [ack["seq"] for ack in acks if ack["seq"] not in shown],
        "frames": len(gaps),
        "max_gap_ms": gaps[-1] if gaps else None,
        "p95_gap_ms": gaps[int(0.95 * (len(gaps) - 1))] if gaps else None,
        "median_gap_ms": statistics.median(gaps) if gaps else None,
        "long_tasks": len(frames["longTasks"]),
        "longest_task_ms": max(frames["longTasks"], default=0.0),
    }

