"""Parity harness: proves the Jittor port and the PyTorch reference compute the same model.

It runs both twins on the same weights and inputs and compares what they compute,
tensor by tensor, in execution order: module outputs, probes, losses, gradients and
training state. The framework-agnostic core works on NumPy arrays:

* ``parity.compare``     comparison functions and the ``Result`` verdict
* ``parity.tolerances``  the tolerance registry (``tolerances.yaml``): which rule judges which tensor
* ``parity.report``      ``reports/<run>/report.json`` (schema: ``schema.md``) and ``report.md``
* ``parity.plot``        the error-by-layer PNG
"""
