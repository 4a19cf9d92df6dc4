"""Check weights against the model a config builds: strict keys and shapes, per target.

``fit_to_model`` builds the target model of ``config`` (the reference for 'torch', the
Jittor twin for 'jittor', HuggingFace's ``RTDetrForObjectDetection`` for 'hf') and
loads the state into it strictly: missing, unexpected or mis-shaped keys raise
``StateDictError`` naming them, before anything is written. Only the framework of the
target is imported.

``align_counters`` is the one deliberate exception to strictness, for HuggingFace
sources: their files hold no ``num_batches_tracked`` where HuggingFace's backbone norms
are frozen, and published ones hold none at all (see ``rtdetr_convert.hf``).
"""
import numpy as np

from rtdetr_common.config import deep_merge

from .read import is_counter

NO_PRETRAINED = {"PResNet": {"pretrained": False}}


def build_model(framework, config, overrides=None):
    """The model of ``config`` in ``framework`` ('jittor' or 'torch'), nothing fetched."""
    overrides = deep_merge(NO_PRETRAINED, overrides or {})
    if framework == "jittor":
        import rtdetr_jittor
        return rtdetr_jittor.build(config, overrides).model
    import reference_pytorch
    return reference_pytorch.build(config, overrides).model


def model_keys(to, config, overrides=None):
    """The official state_dict names the target model of ``config`` holds, in order."""
    if to == "hf":
        from transformers import RTDetrForObjectDetection
        from transformers.initialization import no_init_weights
        from .hf import hf_to_official
        from .hf_config import hf_config
        with no_init_weights():
            model = RTDetrForObjectDetection(hf_config(config, deep_merge(NO_PRETRAINED, overrides or {})))
        return list(hf_to_official(model.state_dict()))
    return list(build_model(to, config, overrides).state_dict())


def align_counters(state, keys):
    """``(state, added, dropped)``: ``state`` with a zero ``num_batches_tracked`` for every
    counter in ``keys`` it lacks, and without its counters ``keys`` lacks. Counters count
    training batches and enter no eval forward; every other key is left to the strict load."""
    keys = set(keys)
    added = [k for k in sorted(keys) if is_counter(k) and k not in state]
    dropped = [k for k in state if is_counter(k) and k not in keys]
    out = {k: v for k, v in state.items() if k not in dropped}
    out.update({k: np.zeros((), np.int64) for k in added})
    return out, added, dropped


def fit_to_model(state, to, config, overrides=None):
    """Load ``state`` strictly into the target model of ``config``; return the state to
    write (NumPy, official names, that target's conventions). Raises ``StateDictError``."""
    if to == "hf":
        from .hf_config import hf_model
        hf_model(config, deep_merge(NO_PRETRAINED, overrides or {}), state=state)
        return state
    model = build_model(to, config, overrides)
    if to == "jittor":
        from rtdetr_jittor.checkpoint import load_model_state
        load_model_state(model, state, strict=True)
        return {k: v.numpy() for k, v in model.state_dict().items()}
    from reference_pytorch.checkpoint import load_model_state, model_state_numpy
    load_model_state(model, state, strict=True)
    return model_state_numpy(model)

