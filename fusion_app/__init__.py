"""The browser app's parts, kept out of ``app.py`` so that file holds only the layout and the wiring.

Without gradio, each plain Python over the ``fusion_core`` public API and testable alone: ``limits`` (the
numeric limits), ``texts`` (the prose and the labels), ``inputs`` (reading and checking uploads and pairs),
``reports`` (the Markdown a request shows, the downloads), ``sessions`` (per-session output folders),
``models`` (tasks and the lazy checkpoint store), ``figures`` (matplotlib views of the network's intermediates
and of training), ``archive`` (safe zip unpacking and checkpoint zips), ``training`` (one background run),
``deadline`` (the time limit of a request), ``device`` (the network's calls, on ZeroGPU when there).
With gradio: ``views`` (the components of each tab) and ``handlers`` (the UI's handlers, ``FusionApp``).
"""
