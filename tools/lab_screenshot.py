#!/usr/bin/env python3
"""Screenshot of the live imbalance page after it has polled for a while in real time.

    tools/lab_screenshot.py URL OUT.png [--seconds 20] [--size 1100,620]

`chromium --screenshot` shoots as soon as the page has loaded, and --virtual-time-budget runs the
page's timers on virtual time, so neither shows the over-time charts as a user sees them after
watching for a while. This drives headless Chromium over the DevTools protocol on a pipe
(--remote-debugging-pipe: NUL-terminated JSON on fds 3 and 4; no websocket, stdlib only), waits
in real time, then captures the page. docs/img/lab-live-view.png was made with it."""

import argparse
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time


class Browser:
    def __init__(self, size: str):
        binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
        if binary is None:
            raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="moeserve-chromium-")
        to_child, self.out = os.pipe()  # the browser reads commands on fd 3
        self.inp, from_child = os.pipe()  # and writes replies and events on fd 4

        def fds_3_and_4():  # in the child; fresh copies first, so neither dup2 hits the other
            a, b = os.dup(to_child), os.dup(from_child)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             "--force-color-profile=srgb", "--hide-scrollbars", f"--window-size={size}",
             f"--user-data-dir={self.profile}", "--remote-debugging-pipe"],
            preexec_fn=fds_3_and_4, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.next_id, self.buffer = 0, b""

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        while True:  # skip events until our reply
            while b"\0" not in self.buffer:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def close(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--size", default="1100,620", help="window width,height in pixels")
    args = parser.parse_args()
    browser = Browser(args.size)
    try:
        target = browser.call("Target.createTarget", url=args.url)["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        # The headless window's viewport is smaller than --window-size; pin it to the size asked.
        width, height = map(int, args.size.split(","))
        browser.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                     deviceScaleFactor=1, mobile=False)
        time.sleep(args.seconds)
        shot = browser.call("Page.captureScreenshot", session, format="png")
        with open(args.out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    finally:
        browser.close()


if __name__ == "__main__":
    main()
