"""Parity harness: proves the Jittor port and the PyTorch reference compute the same model.

It runs both twins on the same weights and inputs and compares what they compute,
tensor by tensor, in execution order: module outputs, probes, losses, gradients and
training state. Running, storing and judging are separate:

* ``parity.cases``       one comparison fully described (``Case``), as JSON and a command
* ``parity.run``         the pair of twins, and ``compare``: run every pass, store, judge
* ``parity.passes``      one pass in one framework, through its backend (``*.backend``)
* ``parity.decisions``   decision points and the reference's decisions forced on the twin
* ``parity.capture``     recording module outputs and probes; ``parity.store`` captures on disk
* ``parity.steps``       optimizer steps in both twins, their training state stored and judged
* ``parity.judge``       judging captures; ``parity.compare`` comparison functions and ``Result``
* ``parity.tolerances``  the tolerance registry (``tolerances.yaml``): which rule judges which tensor
* ``parity.report``      ``reports/<run>/report.json`` (schema: ``schema.md``) and ``report.md``;
  ``parity.index`` the index of a test session's reports; ``parity.plot`` the error PNG

On user data (``python -m parity compare --weights --images``): ``rtdetr_convert``
reads the weights, ``parity.user_images`` the images, ``parity.user_data`` compares them
image by image, ``parity.detections`` matches the detections, ``parity.user_report``
writes the report. ``parity.trained`` builds the cached trained weights and
``parity.trained_vs_random`` sets their float32 figures next to random weights'.
Data-parallel steps: ``parity.distributed``.
"""
