"""The app's numeric limits: sizes, counts, steps, time and the queue. The command line has none of them.

Read as ``limits.NAME`` at call time (never copied by ``from ... import``), so a test can lower one.
"""

from __future__ import annotations

MAX_PIXELS = 4096 * 4096  # larger pairs fuse (in tiles) but the metrics and baselines then take minutes on a CPU
MIN_SIDE = 7  # the metrics' 7 x 7 SSIM window must fit
MAX_EVALUATE_PAIRS = 50  # one Evaluate request fuses each pair five times; the CLI has no such limit
MAX_TRAIN_PAIRS = 500  # the Train tab's limits; the CLI has none. A run holds its pairs in memory at 4 bytes a
MAX_TRAIN_PIXELS = 2**28  # pixel (gray A, RGB B): this many pixels per source in all is 1 GiB
MAX_TRAIN_STEPS = 10_000  # per stage: about half an hour of the `cpu` preset on a 2-core CPU
# Time limits per request, from its start (its wait in the queue does not count), checked between stages
# (fusion_app.deadline). Measured on a 2-core CPU busy with a training run: a Fuse request of a 640 x 480 pair with
# its comparison and maps takes about 6 s (the network alone about a minute on the largest pair, MAX_PIXELS); an
# Evaluate request about 4 s per 640 x 480 pair, so MAX_EVALUATE_PAIRS of them fit.
FUSE_SECONDS = 120
EVALUATE_SECONDS = 300
# Requests waiting for the one CPU-heavy slot (events that only read state bypass the queue). A Fuse request of
# an example pair took 12 s through the API on a 2-core CPU that was training at the time (tools/measure_app.py;
# about half that on an idle one), so the last of 24 waits two to five minutes: past that, a person is better told
# at once that the app is busy (Gradio says so) than left waiting. Gradio shows each waiting request its place in
# the queue and the expected wait. 24 also takes a burst of 20 requests at once (tools/measure_app.py) whole.
QUEUE_SIZE = 24
KEEP_OUTPUTS_SECONDS = 3600  # a session that ended without an unload (a closed laptop) leaves outputs this long
ZERO_GPU_CHUNK_STEPS = 200  # steps per lent GPU call on ZeroGPU: well inside its default 60 s per call
