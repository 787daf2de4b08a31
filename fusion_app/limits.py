"""The app's numeric limits: sizes, counts, steps, time and the queue. The command line has none of them.

Read as ``limits.NAME`` at call time (never copied by ``from ... import``), so a test can lower one.
"""

from __future__ import annotations

# The largest pair whose fusion, metrics and baselines are estimated to fit FUSE_SECONDS on an idle 2-core CPU
# (fusion_app.deadline.fuse_seconds); a whole Fuse request of one peaks the server at 1.5 GB (RSS). Larger pairs
# are refused from their header, before they are decoded.
MAX_PIXELS = 2000 * 2000
# One minimum for everything the app does on a pair, checked before any work: the largest window of the metrics,
# VIF's 17 x 17 (fusion_core.metrics.VIF_MIN_SIDE), must fit. Smaller pairs are refused rather than fused without
# metrics: every Fuse and Evaluate request shows the metric table, and an image of a few pixels says nothing.
MIN_SIDE = 17
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
# The work of a request is estimated from its pixels before it starts, and a request that cannot finish within its
# limit is refused, saying the estimate. Measured on an idle 2-core CPU (the bundled checkpoints' `cpu`
# architecture, both cores): the network fuses about 9 s per megapixel plus a few seconds of set-up; its metrics and
# the four baselines with theirs take about 9 s per megapixel. The estimate grows with the machine's load
# (``FusionApp.slowdown``); SAFETY_FACTOR covers the rest.
NETWORK_SECONDS_PER_MEGAPIXEL = 10.0  # on a CPU; an accelerator's network time is not estimated
NETWORK_SECONDS_PER_IMAGE = 4.0
SCORING_SECONDS_PER_MEGAPIXEL = 9.0  # the metrics of the network's image and the four baselines fused and scored
METRICS_SECONDS_PER_MEGAPIXEL = 2.0  # the metrics of one fused image (another method's, in an evaluation)
SAFETY_FACTOR = 1.5
# Requests waiting for the one CPU-heavy slot (events that only read state bypass the queue). A Fuse request of
# an example pair took 12 s through the API on a 2-core CPU that was training at the time (tools/measure_app.py;
# about half that on an idle one), so the last of 24 waits two to five minutes: past that, a person is better told
# at once that the app is busy (Gradio says so) than left waiting. Gradio shows each waiting request its place in
# the queue and the expected wait. 24 also takes a burst of 20 requests at once (tools/measure_app.py) whole.
QUEUE_SIZE = 24
KEEP_OUTPUTS_SECONDS = 3600  # a session that ended without an unload (a closed laptop) leaves outputs this long
SWEEP_SECONDS = 60  # how often idle sessions and the empty leftovers of Gradio's cache are swept
CACHE_LEFTOVER_SECONDS = 60  # an empty file or folder at the top of Gradio's cache this old is a leftover
ZERO_GPU_CHUNK_STEPS = 200  # steps per lent GPU call on ZeroGPU: well inside its default 60 s per call
