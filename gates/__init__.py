"""The train/eval/infer/resume gates: each framework is a working detector a user can
train, evaluate, run and resume. ``python -m gates.run_gates --full`` (``make gates``)."""
