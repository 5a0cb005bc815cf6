"""Lightning's Trainer arguments and their types, read from its source without importing it.

Importing Lightning takes seconds; a refused trainer value (like `--help` and `--cfg job`) answers at
once because `trainer_signature` parses `pytorch_lightning/trainer/trainer.py` instead.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import typing
from datetime import timedelta
from pathlib import Path


class _Unknown:
    """A type named in Lightning's annotations that this check does not judge (a class of its own)."""


class _SourceNames(dict):
    """The names an annotation in one source file refers to, resolved without importing the file:
    typing's and the builtins', the file's own module-level aliases (`_PRECISION_INPUT = Union[...]`)
    and those it imports from another file of the same installed package; anything else (a class)
    is `_Unknown`."""

    def __init__(self, path: Path, depth: int = 0) -> None:
        super().__init__({**vars(typing), "timedelta": timedelta, "Path": Path})
        tree = ast.parse(path.read_text())
        self.depth = depth
        self.aliases = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                        for t in node.targets if isinstance(t, ast.Name)}
        self.imports = {(a.asname or a.name): (node.module, a.name) for node in tree.body
                        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                        for a in node.names}
        self.tree = tree

    def __missing__(self, key: str) -> object:
        import builtins

        if hasattr(builtins, key):
            return getattr(builtins, key)
        if self.depth < 4 and key in self.aliases:
            self[key] = self.evaluate(self.aliases[key])
        elif self.depth < 4 and key in self.imports:
            module, name = self.imports[key]
            source = _module_source(module)
            self[key] = _SourceNames(source, self.depth + 1)[name] if source is not None else _Unknown
        else:
            self[key] = _Unknown
        return self[key]

    def evaluate(self, node: ast.expr) -> object:
        """The value of an annotation expression of this file (`_Unknown` where it cannot be read)."""
        try:
            return eval(ast.unparse(node), {"__builtins__": {}}, self)  # noqa: S307 - an installed package's annotation
        except Exception:  # noqa: BLE001 - an annotation this check cannot read is not checked
            return _Unknown


def _module_source(module: str) -> Path | None:
    """The source file of `pytorch_lightning.x.y` / `lightning_fabric.x.y`, found without importing it."""
    top, *rest = module.split(".")
    if top not in ("pytorch_lightning", "lightning_fabric"):
        return None
    spec = importlib.util.find_spec(top)  # a submodule's spec would import the package
    if spec is None or spec.origin is None:
        return None
    base = Path(spec.origin).parent.joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def trainer_signature() -> dict[str, object]:
    """{argument: type hint} of `pytorch_lightning.Trainer.__init__`, read from its source, not imported
    (importing Lightning takes seconds); imported only when the source has another shape."""
    try:
        names = _SourceNames(_module_source("pytorch_lightning.trainer.trainer"))
        init = next(f for c in names.tree.body if isinstance(c, ast.ClassDef) and c.name == "Trainer"
                    for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    except (AttributeError, OSError, SyntaxError, StopIteration, TypeError):
        import pytorch_lightning as pl

        params = inspect.signature(pl.Trainer.__init__).parameters
        hints = typing.get_type_hints(pl.Trainer.__init__)
        return {n: hints.get(n, typing.Any) for n in params if n != "self"}
    return {arg.arg: names.evaluate(arg.annotation) if arg.annotation is not None else typing.Any
            for arg in [*init.args.args, *init.args.kwonlyargs] if arg.arg != "self"}


