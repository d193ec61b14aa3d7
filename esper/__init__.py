"""esper — neural networks that grow while they train.

The Python entry (docs/runtime.md §6.7), for a script that grows its own network:

    import esper
    catalogue = esper.register_blueprint(esper.catalogue_for("cnn"), "scale", build, params, host=probe, sample=x)
    summary = esper.train(host=my_network, slots={"mid": 2}, catalogue=catalogue, data=((x, y), (x_val, y_val)),
                          epochs=20, out="runs/mine")

Each name is imported on first use, so `import esper` stays light (the CLI reads only `__version__`).
"""

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_PUBLIC = {
    "train": ("esper.shell.entry", "train"),
    "RunConfig": ("esper.shell.run_config", "RunConfig"),
    "HostFactory": ("esper.shell.user_code", "HostFactory"),
    "host_from_stack": ("esper.shell.nets.stack_host", "host_from_stack"),
    "catalogue_for": ("esper.core.catalogue", "catalogue_for"),
    "register_blueprint": ("esper.shell.blueprint_check", "register"),
    "load_task": ("esper.shell.data", "load_task"),
    "tensor_data": ("esper.shell.data.tensors", "tensor_data"),
    "dataset_data": ("esper.shell.data.tensors", "dataset_data"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'esper' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next lookup is a plain one
    return value
