"""Soak test: a real app server on 127.0.0.1 with a tiny model under concurrent `gradio_client` sessions.

    python -m bench.soak [--clients 20] [--turns 10] [--deadline-s 900] [--ttl-s 120]

The server runs in a child process (its memory and open files are measured from /proc), with Gradio's cache and
the system temp folder (where session folders go) in folders of its own. Each client is one session: it connects
(a request), then does `--turns` requests: an upload, follow-ups, click refinements, downloads, and in turn (client
index) order some intended bad inputs (a fake image, an over-long message, a click outside the image) and a request
dropped mid-answer. After the clients finish, the sessions end by time-out (`--ttl-s`),
then the server is stopped. Prints requests served, errors (intended / unintended), p50/p95 latency, server RSS and
open files before / during / after, and the disk used under the temp folder before / after. "Before" is measured
after a warm-up turn by a client of its own (its session is still open then, and ends with the others).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from tests.helpers import free_port, write_image


def serve(checkpoint: str, port: int, ttl_s: int) -> None:
    """The child process: the app for a tiny checkpoint, with scripted answers holding two objects."""
    from chat.settings import MIB, AppSettings
    from chat.ui import build_demo, launch
    from model.inference import SegChat
    from tests.helpers import ANSWER, ScriptedAnswer, script

    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("chat").setLevel(logging.INFO)
    chat = SegChat.from_pretrained(checkpoint)
    chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, ANSWER))]}
    settings = AppSettings(max_file_bytes=4 * MIB, session_ttl_s=ttl_s, queue_size=64)
    launch(build_demo(chat, settings), port=port, settings=settings)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def disk_kib(folder: Path) -> float:
    """Bytes of the files under `folder` (files removed while it is walked are skipped), in KiB."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(parent, name)).st_size
            except FileNotFoundError:
                pass
    return total / 1024


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    served: int = 0
    intended: int = 0
    unintended: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.served += 1
            if outcome == "intended":
                self.intended += 1
            elif outcome == "unintended":
                self.unintended.append(detail)


def _is_warning(chat: list[dict]) -> bool:
    last = [b["text"] for m in chat for b in m["content"] if b["type"] == "text"][-1]
    return last.startswith("⚠️")


def connect(url: str, tally: Tally, index: int) -> Client | None:
    """A new session (the config download is a request too, timed and counted)."""
    start = time.perf_counter()
    try:
        # The chat's files stay on the server (the download step fetches the one file it asks for): otherwise each
        # call re-downloads every image of the chat on this machine's cores, and that is the client's cost.
        client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
    except Exception as err:
        tally.record(time.perf_counter() - start, "unintended", f"client {index} connect: {type(err).__name__}: {err}")
        return None
    tally.record(time.perf_counter() - start, "ok")
    return client


def client_run(url: str, index: int, turns: int, media: Path, tally: Tally, deadline: float,
               clients: list[Client]) -> None:
    """One person's session; the client is kept open in `clients` (a closed client's state is kept by Gradio for
    an hour, in case it reconnects), so the session ends by its idle time-to-live."""
    time.sleep(0.5 * index)  # people arrive over ten seconds, not in the same millisecond
    client = connect(url, tally, index)
    if client is None:
        return
    clients.append(client)
    image = write_image(media / f"photo{index}.png", 96, 64, seed=index)
    fake = media / f"fake{index}.png"
    fake.write_text("not a picture")
    video = ("sa2va", 5, "first")

    def ask(text: str, path: Path | None = None) -> list:
        message = {"text": text, "files": [handle_file(str(path))] if path else []}
        return client.predict(message, *video, api_name="/ask")[0]

    plan = ["upload", "follow", "refine", "download", "bad", "follow", "refine", "disconnect", "follow", "download"]
    for turn in range(turns):
        if time.monotonic() > deadline:
            return
        step = plan[(turn + index) % len(plan)] if turn else "upload"
        start = time.perf_counter()
        outcome, detail = "ok", ""
        try:
            if step == "upload":
                outcome = "unintended" if _is_warning(ask(f"client {index}: segment the apple", image)) else "ok"
            elif step == "follow":
                outcome = "unintended" if _is_warning(ask(f"client {index}: and the cup?")) else "ok"
            elif step == "refine":
                client.predict(0, 10 + turn, 10, "include", api_name="/refine")
            elif step == "download":
                files = client.predict(api_name="/download")
                httpx.get(files[0]["url"], timeout=120).raise_for_status()
            elif step == "bad":
                kind = index % 3
                if kind == 0:
                    outcome = "intended" if _is_warning(ask("what is this?", fake)) else "unintended"
                elif kind == 1:
                    outcome = "intended" if _is_warning(ask("x" * 5000)) else "unintended"
                else:
                    try:
                        client.predict(0, 10_000, 10, "include", api_name="/refine")
                        outcome = "unintended"
                    except Exception as err:  # the intended refusal reaches the client as an error
                        outcome = "intended" if "outside" in str(err) else "unintended"
            elif step == "disconnect":
                job = client.submit({"text": "a long answer", "files": []}, *video, api_name="/ask")
                time.sleep(0.05)
                job.cancel()
                outcome = "intended"
        except Exception as err:
            outcome, detail = "unintended", f"client {index} {step}: {type(err).__name__}: {err}"
        tally.record(time.perf_counter() - start, outcome, detail)


def warm_up(url: str, work: Path) -> Client:
    """One turn, one refinement and a download by a client of its own, before the baseline is measured; the client
    stays open (its session then ends by time-out, like the others)."""
    client = Client(url, verbose=False, download_files=False)
    image = write_image(work / "warm_up.png", 96, 64)
    client.predict({"text": "warm up", "files": [handle_file(str(image))]}, "sa2va", 5, "first", api_name="/ask")
    client.predict(0, 10, 10, "include", api_name="/refine")
    client.predict(api_name="/download")
    return client


def measure(pid: int, temp: Path) -> dict:
    """The server's memory and open files, and the disk used under `temp` (Gradio's cache and the temp folder)."""
    return {"rss_mib": rss_mib(pid), "open_files": open_files(pid), "disk_kib": disk_kib(temp)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--deadline-s", type=float, default=900)
    parser.add_argument("--ttl-s", type=int, default=120,
                        help="session time-to-live on the server (above the longest wait in the queue)")
    parser.add_argument("--serve", nargs=3, metavar=("CHECKPOINT", "PORT", "TTL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return

    from model.tiny import build_tiny

    work = Path(tempfile.mkdtemp(prefix="segchat-soak-"))
    temp = work / "temp"
    (temp / "gradio").mkdir(parents=True)
    (temp / "system").mkdir()
    checkpoint = build_tiny(work / "tiny", "qwen3_vl")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp / "gradio"), "TMPDIR": str(temp / "system"),
           "OMP_NUM_THREADS": "1"}
    log_file = work / "server.log"
    with log_file.open("w") as log_out:
        server = subprocess.Popen([sys.executable, "-m", "bench.soak", "--serve", str(checkpoint), str(port),
                                   str(args.ttl_s)], env=env, stdout=log_out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                Client(url, verbose=False).close()
                break
            except Exception:
                time.sleep(1)
        warmed = warm_up(url, work)  # the first turn allocates what every later one reuses (kernels, caches)
        before = measure(server.pid, temp)
        tally = Tally()
        media = work / "media"
        media.mkdir()
        deadline = time.monotonic() + args.deadline_s
        clients: list[Client] = [warmed]
        threads = [threading.Thread(target=client_run, args=(url, i, args.turns, media, tally, deadline, clients),
                                    daemon=True) for i in range(args.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        during: list[dict] = []
        while any(t.is_alive() for t in threads):
            during.append(measure(server.pid, temp))
            time.sleep(2)
        elapsed = time.perf_counter() - started
        time.sleep(args.ttl_s + 5)  # every session times out and removes its files
        after = measure(server.pid, temp)
        for client in clients:
            client.close()
        time.sleep(5)
        after["open_files"] = open_files(server.pid)  # once the clients' connections are closed
    finally:
        server.terminate()
        server.wait(timeout=60)
    stopped_disk = disk_kib(temp)
    log = log_file.read_text()
    tracebacks = log.count("Traceback")
    refusals = log.count(" refused: ")

    lat = sorted(tally.latencies)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
    print(f"clients {args.clients} x turns {args.turns}: {tally.served} requests served in {elapsed:.0f} s")
    print(f"errors: {tally.intended} intended (bad inputs, disconnects), {len(tally.unintended)} unintended")
    for line in tally.unintended[:10]:
        print("   ", line)
    if lat:
        print(f"latency: p50 {statistics.median(lat):.2f} s, p95 {p95:.2f} s, max {lat[-1]:.2f} s")
    peak = max(during, key=lambda m: m["rss_mib"]) if during else before
    print(f"server RSS MiB: before {before['rss_mib']:.0f}, during max {peak['rss_mib']:.0f}, "
          f"after {after['rss_mib']:.0f}")
    print(f"server open files: before {before['open_files']}, during max "
          f"{max(m['open_files'] for m in during) if during else 0}, after {after['open_files']}")
    print(f"disk under the temp folders KiB: before {before['disk_kib']:.0f}, during max "
          f"{max(m['disk_kib'] for m in during) if during else 0:.0f}, after sessions ended "
          f"{after['disk_kib']:.0f}, after shutdown {stopped_disk:.0f}")
    print(f"server log: {refusals} one-line refusals, {tracebacks} tracebacks ({log_file})")


if __name__ == "__main__":
    main()
