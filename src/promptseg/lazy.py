"""Names of a package imported on first use, so that importing the package stays cheap and a
part that needs no torch (the ONNX Runtime predictor) works where torch is not installed."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_names(package: str, where: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose names live in the modules `where` maps
    them to (relative to the package, or absolute)."""

    def getattr_(name: str):
        if name in where:
            module = where[name]
            return getattr(import_module(module if "." in module and not module.startswith(".") else
                                         f"{package}.{module.lstrip('.')}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted([*import_module(package).__dict__, *where])

    return getattr_, dir_
