"""Speed and memory benchmarks: the Jittor port against the PyTorch reference.

``python -m bench.run`` (``make bench``) measures, per model and input size, the eval
forward latency (batch 1) and a training step (batch 2: forward, loss, backward,
clipping, AdamW) with the two frameworks interleaved, each configuration in its own
process (``bench.worker``), and writes ``reports/bench/bench.json`` and ``bench.md``.
``python -m bench.profile_jittor`` gives the op-level profile of both frameworks.

Modules: ``workload`` (configs, inputs, targets), ``worker`` (one measured process),
``procs`` (the orchestrator's handle on a worker), ``stats`` (medians and spreads),
``cold`` (a fresh Jittor cache), ``report`` (JSON/Markdown), ``run`` (the interleaving
orchestrator), ``profile_common``, ``profile_jittor`` and ``profile_pytorch`` (op-level
profiles), ``jittor_repros`` (minimal reproductions of Jittor-side limits).
"""
