"""Softphone latency in a real Chromium (fake microphone) against Kamailio on loopback and a hub
process, the same rig as tests/browser/test_softphone_browser.py:

- ring → card: from the INVITE arriving at the callee's SIP WebSocket (a listener installed
  before JsSIP's own) to the ringing card with its Answer button in the page (MutationObserver);
- Answer → media: from the click on Answer to the first inbound RTP bytes
  (``RTCPeerConnection.getStats()`` polled every 5 ms).

Both are measured with the callee page's own clock (performance.now()).

    python bench/softphone.py              # 30 calls
    python bench/softphone.py --calls 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

# The Kamailio rig and the hub launcher are the browser tests' own (one config, not two copies).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, start_hub, stop_hub  # noqa: E402
from tests.browser.kamailio import Kamailio  # noqa: E402

from callbridge.config import Settings  # noqa: E402
from callbridge.domain.users import Role  # noqa: E402
from callbridge.hub import Hub  # noqa: E402

PASSWORD = "bench-password-1"
GOAL_CARD_P99_MS = 50.0
GOAL_MEDIA_P99_MS = 500.0

PROBE = """
(() => {
  window.__bench = { invites: [], cards: [] };
  const Native = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    ws.addEventListener("message", (e) => {
      const invite = typeof e.data === "string" && e.data.startsWith("INVITE ");
      if (invite) window.__bench.invites.push(performance.now());
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  new MutationObserver(() => {
    const list = document.getElementById("pop-list");
    const has = !!(list && list.querySelector("[data-sp-answer]"));
    if (has && !window.__bench.showing) window.__bench.cards.push(performance.now());
    window.__bench.showing = has;
  }).observe(document, { subtree: true, childList: true });
})();
"""

FIRST_MEDIA = """
async () => {
  const t0 = performance.now();
  document.querySelector("#pop-list [data-sp-answer]").click();
  for (;;) {
    for (const pc of window.callbridgeSoftphone.peers.values()) {
      const stats = await pc.getStats();
      let bytes = 0;
      stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") bytes += s.bytesReceived; });
      if (bytes > 0) return performance.now() - t0;
    }
    if (performance.now() - t0 > 10000) return -1;
    await new Promise((r) => setTimeout(r, 5));
  }
}
"""


async def seed(data_dir: Path, ws_url: str) -> None:
    hub = Hub.build(Settings(data_dir=data_dir))
    try:
        await hub.prepare()
        async with hub.db.unit() as repos:
            for name in ("caller", "callee"):
                user, _ = await hub.accounts(repos).create_user(name, Role.AGENT, PASSWORD)
                await repos.softphones.put(
                    user.id,
                    enabled=True,
                    ws_url=ws_url,
                    sip_uri=f"sip:{name}@127.0.0.1",
                    auth_user=name,
                    ice_servers=[],
                    secret=f"pw-{name}",
                )
    finally:
        await hub.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, values: list[float], goal: float) -> str:
    p50, p99 = statistics.median(values), percentile(values, 0.99)
    return (
        f"{name:<28} n={len(values):<4} p50={p50:7.1f} ms  p99={p99:7.1f} ms  max={max(values):7.1f} ms"
        f"  goal p99 ≤ {goal:.0f} ms  (p99/goal {p99 / goal:.2f})"
    )


def state(page: Page, value: str) -> None:
    expect(page.locator("#softphone")).to_have_attribute("data-softphone-state", value, timeout=10000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kam = Kamailio(Path(tmp) / "kamailio")
        kam.directory.mkdir()
        kam.start()
        data_dir = Path(tmp) / "hub"
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, seed(data_dir, kam.ws_url)).result(60)
        hub = start_hub(data_dir)
        cards: list[float] = []
        media: list[float] = []
        try:
            with sync_playwright() as p:
                flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *flags]
                )
                pages = {}
                for name in ("caller", "callee"):
                    context = browser.new_context(permissions=["microphone"])
                    if name == "callee":
                        context.add_init_script(PROBE)
                    page = context.new_page()
                    page.goto(hub.url + "/login?next=/desk")
                    page.get_by_label("User name").fill(name)
                    page.get_by_label("Password").fill(PASSWORD)
                    page.get_by_role("button", name="Sign in").click()
                    state(page, "registered")
                    pages[name] = page
                caller, callee = pages["caller"], pages["callee"]
                for _ in range(args.calls):
                    caller.locator("#sp-number").fill("callee")
                    caller.locator("[data-sp-dial] button").click()
                    expect(callee.locator("#pop-list [data-sp-answer]")).to_have_count(1, timeout=10000)
                    callee.wait_for_timeout(50)  # let the card's timestamp land
                    invite, card = callee.evaluate(
                        "() => [window.__bench.invites.at(-1), window.__bench.cards.at(-1)]"
                    )
                    cards.append(card - invite)
                    took = callee.evaluate(FIRST_MEDIA)
                    if took < 0:
                        raise SystemExit("no inbound RTP within 10 s of Answer")
                    media.append(took)
                    state(callee, "in_call")
                    callee.locator("#softphone [data-sp-hangup]").click()
                    state(caller, "registered")
                    state(callee, "registered")
                    time.sleep(0.1)
                browser.close()
        finally:
            stop_hub(hub)
            kam.stop()
    print(line("INVITE → card with Answer", cards, GOAL_CARD_P99_MS))
    print(line("Answer → first inbound RTP", media, GOAL_MEDIA_P99_MS))


if __name__ == "__main__":
    main()
