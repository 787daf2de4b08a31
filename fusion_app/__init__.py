"""The browser app's own parts, kept out of ``app.py`` so that file holds only handlers, layout and wiring.

None of these modules imports gradio: each is plain Python over the ``fusion_core`` public API, testable alone.
``models`` (tasks and the lazy checkpoint store), ``figures`` (matplotlib views of the network's intermediates
and of training), ``archive`` (safe zip unpacking and checkpoint zips), ``training`` (one background run),
``deadline`` (the time limit of a request).
"""
