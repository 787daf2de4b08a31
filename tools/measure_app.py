"""Load measurement of the launched app: concurrent and sequential Fuse requests through gradio_client.

Run from the repository root (about half an hour on a 2-core CPU with the defaults):

    PYTHONPATH=. .venv/bin/python tools/measure_app.py --concurrent 20 --sequential 100 --out report.json

It starts ``app.py`` in a child process (the bundled checkpoints, a free port, a temporary folder of its own for
Gradio's cache and the app's outputs), then sends ``--concurrent`` Fuse requests of a bundled example pair at
once, one client (one session) each: failures, median and maximum latency (a latency includes the wait in the
queue, since one request runs at a time). Then ``--sequential`` requests one after the other from one client.
The files on disk (count and bytes) are measured before the first request, after the sequential ones, and once
every client has closed its session and ``--settle`` seconds have passed: Gradio's cache, the uploads in it
(the pair is uploaded under names of its own, so they can be told from the bundled examples Gradio caches too)
and the sessions' folders of the app. Last, the server's peak resident memory (VmHWM of /proc/PID/status). The
report is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from fusion_app.inputs import EXAMPLES, FuseOptions
from fusion_app.models import AUTO, TASKS
from fusion_app.texts import DEFAULT_WINDOW

ROOT = Path(__file__).resolve().parents[1]
TASK = "Infrared + visible"
UPLOAD_PREFIX = "measured-upload-"


@dataclass(frozen=True)
class Latencies:
    """Seconds per request, and the requests that failed (their messages)."""

    seconds: tuple[float, ...]
    failures: tuple[str, ...]

    def summary(self) -> dict:
        return {"requests": len(self.seconds) + len(self.failures), "failures": len(self.failures),
                "failure_messages": sorted(set(self.failures))[:5],
                "median_s": round(statistics.median(self.seconds), 2) if self.seconds else None,
                "max_s": round(max(self.seconds), 2) if self.seconds else None}


@dataclass(frozen=True)
class Server:
    """The launched app: its process, its address and the folder holding its temporary files."""

    process: subprocess.Popen
    url: str
    temp: Path

    def peak_rss_mib(self) -> float:
        """VmHWM, the peak resident set size of the server process so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return round(kib / 1024, 1)

    def disk(self) -> dict[str, dict[str, int]]:
        """Files and bytes in Gradio's cache, in it under the uploads' names, and in the sessions' folders."""
        cache = [p for p in (self.temp / "gradio").rglob("*") if p.is_file()]
        sessions = [p for p in (self.temp / "dgd-fusion-app" / "sessions").rglob("*") if p.is_file()]
        uploads = [p for p in cache if p.name.startswith(UPLOAD_PREFIX)]
        return {name: {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
                for name, files in (("gradio_cache", cache), ("uploads_in_gradio_cache", uploads),
                                    ("session_folders", sessions))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(temp: Path, log: Path, timeout: float = 300) -> Server:
    """``app.py`` in a child process whose temporary files all go under ``temp``; returns once it answers."""
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(temp / "gradio"),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return Server(process, url, temp)
        except OSError:
            time.sleep(1)
    process.terminate()
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s; see {log}")


def fuse_inputs(temp: Path) -> tuple:
    """The /fuse endpoint's inputs for the first bundled infrared + visible pair, written into ``temp`` under
    names of its own and with a text chunk of their own (the app leaves Gradio's copies of the bundled examples
    in place, so an upload must differ from them), and the Fuse tab's defaults."""
    folder = EXAMPLES / TASKS[TASK].folder
    name = sorted((folder / "ir").iterdir())[0].name
    sources = []
    for side in ("ir", "vi"):
        sources.append(temp / f"{UPLOAD_PREFIX}{side}-{name}")
        note = PngInfo()
        note.add_text("Comment", "an upload of tools/measure_app.py")
        Image.open(folder / side / name).save(sources[-1], pnginfo=note)
    options = FuseOptions()
    return (handle_file(str(sources[0])), handle_file(str(sources[1])), TASK, AUTO,
            DEFAULT_WINDOW, options.frame_a, DEFAULT_WINDOW, options.frame_b, options.timesteps, options.seed,
            options.resample, options.align)


def timed_fuse(client: Client, inputs: tuple) -> float | str:
    """Seconds one request took, or its error message."""
    began = time.perf_counter()
    try:
        client.predict(*inputs, api_name="/fuse")
    except Exception as error:  # a failed request is counted and reported, not raised
        return f"{type(error).__name__}: {error}"
    return time.perf_counter() - began


def collect(results: list[float | str]) -> Latencies:
    return Latencies(tuple(r for r in results if isinstance(r, float)), tuple(r for r in results if isinstance(r, str)))


def client(url: str, downloads: Path) -> Client:
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads))


def measure(server: Server, concurrent: int, sequential: int, downloads: Path, settle: float) -> dict:
    downloads.mkdir(parents=True, exist_ok=True)
    inputs = fuse_inputs(downloads)
    before = server.disk()
    clients = [client(server.url, downloads) for _ in range(concurrent)]
    with ThreadPoolExecutor(concurrent) as pool:
        at_once = collect(list(pool.map(timed_fuse, clients, [inputs] * concurrent)))
    one = client(server.url, downloads)
    in_turn = collect([timed_fuse(one, inputs) for _ in range(sequential)])
    after = server.disk()
    for each in (*clients, one):
        each.close()
    time.sleep(settle)  # a closed session ends when its heartbeat next fails; the app sweeps every minute
    return {"concurrent": at_once.summary(), "sequential": in_turn.summary(),
            "disk": {"before_the_run": before, "after_sequential": after,
                     f"after_sessions_closed_{settle:.0f}_s": server.disk()},
            "server_peak_rss_mib": server.peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=20, help="Fuse requests sent at once (default 20)")
    parser.add_argument("--sequential", type=int, default=100, help="Fuse requests sent in turn (default 100)")
    parser.add_argument("--settle", type=float, default=150,
                        help="seconds to wait for closed sessions and the app's sweep (default 150)")
    parser.add_argument("--out", help="write the JSON report here too")
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="dgd-fusion-measure-"))
    server = launch(temp, temp / "server.log")
    try:
        report = {"machine": {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                  **measure(server, args.concurrent, args.sequential, temp / "downloads", args.settle)}
    finally:
        server.process.terminate()
        server.process.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
