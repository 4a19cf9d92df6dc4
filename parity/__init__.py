"""Parity harness: proves the Jittor port and the PyTorch reference compute the same model.

It runs both twins on the same weights and inputs and compares what they compute,
tensor by tensor, in execution order: module outputs, probes, losses, gradients and
training state. The framework-agnostic core works on NumPy arrays:

* ``parity.compare``     comparison functions and the ``Result`` verdict
* ``parity.tolerances``  the tolerance registry (``tolerances.yaml``): which rule judges which tensor
* ``parity.report``      ``reports/<run>/report.json`` (schema: ``schema.md``) and ``report.md``
* ``parity.plot``        the error-by-layer PNG

On user data (``python -m parity compare --weights --images``): ``parity.weights_file``
reads the weights, ``parity.user_images`` the images, ``parity.user_data`` compares them
image by image, ``parity.detections`` matches the detections, ``parity.user_report``
writes the report. ``parity.trained`` builds the cached trained weights and
``parity.trained_vs_random`` sets their float32 figures next to random weights'.
"""
