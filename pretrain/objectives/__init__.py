"""The objective registry: every module of this package that defines an ``Objective`` with a ``spec``.

Adding an objective is one module here plus one YAML in ``configs/``; nothing else lists
objectives. A YAML may also name an objective outside this package as ``module:Class``
(a team's own objective, or a test's fault-injecting wrapper). ``MODEL=`` names are the
YAML files of ``configs/`` (see ``pretrain.config.models``), so a recipe such as BERT
whole-word MLM is its own model without code.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from pipeline.typed_config import ConfigError
from pretrain.objectives.base import Objective, ObjectiveSpec, Options, load_tokenizer  # noqa: F401


@lru_cache(maxsize=None)
def registry() -> dict[str, type]:
    """{spec.name: Objective subclass} of the modules in this package."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Objective) and "spec" in vars(value)
                    and value.__module__ == module.__name__):
                found[value.spec.name] = value
    return dict(sorted(found.items()))


def objective_class(name: str) -> type:
    """The Objective subclass for a registered name or a ``module:Class`` path."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"objective '{name}' cannot be imported ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Objective) and hasattr(cls, "spec")):
            raise ConfigError(f"objective '{name}' is not an Objective subclass with a spec")
        return cls
    objectives = registry()
    if name not in objectives:
        raise ConfigError(f"unknown objective '{name}' (valid: {'|'.join(objectives)})")
    return objectives[name]
