"""Names of a package imported on first use, so that importing the package stays cheap and a
part that needs no torch (the ONNX Runtime predictor) works where torch is not installed."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_names(package: str, where: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose names live in the modules `where` maps
    them to (a module of the package by its bare name, or a dotted absolute name)."""

    def getattr_(name: str):
        if name in where:
            module = where[name]
            return getattr(import_module(module if "." in module else f"{package}.{module}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted([*import_module(package).__dict__, *where])

    return getattr_, dir_
