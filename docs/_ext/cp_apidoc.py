"""
Sphinx extension: the API reference, from connectproxy's epytext
docstrings.

- Docstrings are converted from epytext by L{cp_epytext} as autodoc reads
  them; names in C{L{...}} and C{@raise} are looked up the way pydoctor
  does, from the docstring's class and module (the imports under
  C{TYPE_CHECKING} included), and linked to where this reference documents
  them (an object of a private module re-exported by C{connectproxy} is
  documented as C{connectproxy.Name}).
- References that Sphinx cannot resolve (nitpicky mode) are resolved the
  same way; a name that exists but is not part of this reference (a private
  helper, Twisted, the standard library: there is no network for
  intersphinx) is shown as code without a link.  A name that does not exist
  stays a warning, so a typo in a docstring fails the build.
- C{zope.interface} interfaces, which autodoc does not know, are documented
  by the C{autointerfaces} directive, with their methods' signatures taken
  from the source.

Configuration: C{cp_api_modules}, the modules the reference documents (their
C{__all__} is the public API).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import sys
from functools import cache
from types import ModuleType
from typing import Any

import cp_epytext
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles
from zope.interface.interface import Attribute, InterfaceClass, Method

_log = logging.getLogger(__name__)

_MISSING = object()


class Names:
    """
    What the names used in docstrings stand for, and under which name this
    reference documents each object.

    @ivar modules: The documented modules, most public first.
    """

    def __init__(self, modules: list[str]) -> None:
        self.modules = modules
        self._public: dict[int, str] | None = None

    def public(self) -> dict[int, str]:
        """
        The documented name of each documented class, function and
        interface, by the object's C{id}.
        """
        if self._public is None:
            self._public = {}
            for moduleName in self.modules:
                module = importlib.import_module(moduleName)
                self._public.setdefault(id(module), moduleName)
                for name in getattr(module, "__all__", ()):
                    value = getattr(module, name)
                    if _isDefinition(value):
                        self._public.setdefault(id(value), f"{moduleName}.{name}")
        return self._public

    def documents(self, qualified: str) -> bool:
        """
        Whether a fully qualified name is part of the documented API: a
        documented module, a name in its C{__all__}, or a public member of
        one.
        """
        if qualified in self.modules:
            return True
        if any(part.startswith("_") for part in qualified.split(".")):
            return False
        for moduleName in self.modules:
            if qualified.startswith(moduleName + "."):
                exported = getattr(importlib.import_module(moduleName), "__all__", ())
                first = qualified[len(moduleName) + 1 :].split(".")[0]
                if first in exported:
                    return True
        return False

    def scopeOf(self, documented: str) -> tuple[ModuleType, Any]:
        """
        The scope a docstring's names are looked up in.

        @param documented: The full name autodoc documents an object under.
        @return: The module that defines it, and the class (or interface)
            it belongs to or is, or C{None}.
        """
        module, rest = _importPrefix(documented)
        obj: Any = module
        scope = None
        for part in rest:
            parent = obj
            obj = getattr(parent, part, _MISSING)
            if obj is _MISSING and isinstance(parent, InterfaceClass):
                obj = parent.get(part, _MISSING)
            if obj is _MISSING:
                break
            if isinstance(obj, type | InterfaceClass):
                scope = obj
                module = sys.modules.get(obj.__module__, module)
            elif inspect.isfunction(obj) and scope is None:
                module = sys.modules.get(obj.__module__, module)
            else:
                break
        return module, scope

    def qualify(self, target: str, module: ModuleType, scope: Any = None) -> str | None:
        """
        The documented (or else the fully qualified) name of what C{target}
        names in a scope, or C{None} if it names nothing.
        """
        first, *rest = target.split(".")
        obj = _lookup(first, module, scope)
        path = [first]
        if obj is _MISSING and isinstance(scope, type) and first in _ivars(scope):
            # An instance variable its class's docstring describes.
            return ".".join([self._name(scope, scope.__qualname__), first, *rest])
        if obj is _MISSING:
            found = _importPath(target)
            if found is _MISSING:
                return None
            obj, path, rest = found, target.split("."), []
        parentName = self._name(obj, ".".join(path))
        for part in rest:
            child = getattr(obj, part, _MISSING)
            if child is _MISSING and isinstance(obj, InterfaceClass):
                child = obj.get(part, _MISSING)
            if child is _MISSING:
                # An instance variable, say: documented with its class.
                return ".".join([parentName, part, *rest[rest.index(part) + 1 :]])
            name = self._name(child, None)
            parentName = name if name is not None else f"{parentName}.{part}"
            obj = child
        return parentName

    def _name(self, obj: Any, fallback: str | None) -> str:
        public = self.public()
        if id(obj) in public and _isDefinition(obj):
            return public[id(obj)]
        if isinstance(obj, ModuleType):
            return obj.__name__
        if _isDefinition(obj) or isinstance(obj, property):
            owner = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None) or getattr(
                obj, "__name__", None
            )
            if owner == "builtins" and isinstance(qualname, str):
                return qualname
            if isinstance(owner, str) and isinstance(qualname, str):
                head, _, last = qualname.rpartition(".")
                if head:
                    container = _importPath(f"{owner}.{head}")
                    if id(container) in public:
                        return f"{public[id(container)]}.{last}"
                return f"{owner}.{qualname}"
        return fallback if fallback is not None else repr(obj)


def _isDefinition(value: object) -> bool:
    return (
        isinstance(value, type | InterfaceClass)
        or inspect.isfunction(value)
        or inspect.ismethod(value)
        or isinstance(value, classmethod | staticmethod)
    )


def _ivars(cls: type) -> set[str]:
    """
    The instance variables the docstrings of a class and its bases describe
    (C{@ivar name:}).
    """
    return {
        match[1]
        for klass in inspect.getmro(cls)
        for match in re.finditer(r"@ivar\s+(\w+)\s*:", klass.__doc__ or "")
    }


def _importPrefix(dotted: str) -> tuple[ModuleType, list[str]]:
    """
    Import the longest module prefix of a dotted name.

    @return: The module and the rest of the name.
    @raise ImportError: When not even the first part is a module.
    """
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            return importlib.import_module(".".join(parts[:end])), parts[end:]
        except ImportError:
            continue
    raise ImportError(dotted)


def _importPath(dotted: str) -> Any:
    """
    The object a fully qualified name names, or C{_MISSING}.
    """
    try:
        obj: Any
        obj, rest = _importPrefix(dotted)
    except ImportError:
        return _MISSING
    for part in rest:
        child = getattr(obj, part, _MISSING)
        if child is _MISSING and isinstance(obj, InterfaceClass):
            child = obj.get(part, _MISSING)
        if child is _MISSING:
            return _MISSING
        obj = child
    return obj


def _lookup(name: str, module: ModuleType, scope: Any) -> Any:
    """
    Look a name up as Python (and pydoctor) would from a docstring: the
    class and its bases, the module (imports made only for type checkers
    included), then the builtins.
    """
    if isinstance(scope, InterfaceClass):
        if scope.get(name) is not None:
            return scope
    elif isinstance(scope, type):
        for klass in inspect.getmro(scope):
            if name in vars(klass):
                return getattr(scope, name, vars(klass)[name])
    if name in vars(module):
        return vars(module)[name]
    imported = typeCheckingImports(module).get(name)
    if imported is not None:
        return _importPath(imported)
    if hasattr(builtins, name):
        return getattr(builtins, name)
    return _MISSING


@cache
def typeCheckingImports(module: ModuleType) -> dict[str, str]:
    """
    Every name a module imports, anywhere in its source (under
    C{if TYPE_CHECKING:} too), with the fully qualified name it stands for.
    """
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return {}
    package = module.__name__ if hasattr(module, "__path__") else module.__package__
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = (package or "").split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.partition(".")[0]] = (
                    alias.name if alias.asname else alias.name.partition(".")[0]
                )
    return names


def _names(app: Sphinx) -> Names:
    names: Names | None = getattr(app, "_cpNames", None)
    if names is None:
        names = Names(list(app.config.cp_api_modules))
        app._cpNames = names  # type: ignore[attr-defined]
    return names


def processDocstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """
    Convert a docstring from epytext (autodoc-process-docstring).
    """
    names = _names(app)
    module, scope = names.scopeOf(name)
    if what in ("class", "exception", "module") and scope is None and what != "module":
        scope = obj

    def qualify(target: str) -> str | None:
        return names.qualify(target, module, scope)

    try:
        lines[:] = cp_epytext.convert(lines, qualify)
    except cp_epytext.EpytextError as e:
        _log.warning("%s: %s", name, e, type="epytext", subtype="syntax")


_INTERFACE_REPR = re.compile(r"<InterfaceClass ([\w.]+)>")


def processSignature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    returnAnnotation: str | None,
) -> tuple[str | None, str | None]:
    """
    Write interfaces in annotations by name, not as their C{repr}
    (autodoc-process-signature).
    """

    def clean(text: str | None) -> str | None:
        return None if text is None else _INTERFACE_REPR.sub(r"\1", text)

    return clean(signature), clean(returnAnnotation)


def skipMember(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """
    Leave out the C{opt_*} handlers of command-line options: the options
    reference documents them as options (autodoc-skip-member).
    """
    if what == "class" and name.startswith("opt_"):
        return True
    return None


def missingReference(
    app: Sphinx, env: BuildEnvironment, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    """
    Resolve what Sphinx could not (missing-reference): names as a
    docstring or annotation sees them, documented objects under their
    documented name, and other existing objects as plain code.
    """
    if node.get("refdomain") != "py":
        return None
    names = _names(app)
    target = node["reftarget"].lstrip("~.")
    moduleName = node.get("py:module")
    className = node.get("py:class")
    qualified = None
    for context in filter(
        None, [f"{moduleName}.{className}" if className else None, moduleName]
    ):
        try:
            module, scope = names.scopeOf(context)
        except ImportError:
            continue
        qualified = names.qualify(target, module, scope)
        if qualified is not None:
            break
    if qualified is None:
        found = _importPath(target)
        if found is not _MISSING:
            qualified = names._name(found, target)
        elif names.documents(target):
            # Perhaps an instance variable: its class may be documented.
            qualified = target
        else:
            return None
    domain: Any = env.get_domain("py")

    def resolve(name: str) -> nodes.Element | None:
        return domain.resolve_xref(  # type: ignore[no-any-return]
            env, node["refdoc"], app.builder, "obj", name, node, contnode
        )

    resolved = resolve(qualified)
    if resolved is not None:
        return resolved
    if not names.documents(qualified):
        # It exists, but this reference does not document it.
        return contnode
    # A member documented only in its class's text (an @ivar): link to the
    # class.
    # A member that exists but has no entry of its own (an instance variable
    # its class describes, a method without a docstring): link to its class.
    parent, _, member = qualified.rpartition(".")
    owner = _importPath(parent)
    if isinstance(owner, type) and (member in _ivars(owner) or hasattr(owner, member)):
        return resolve(parent)
    return None


class AutoInterfaces(SphinxDirective):
    """
    Document the C{zope.interface} interfaces a module lists in its
    C{__all__}: C{.. autointerfaces:: module}.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        moduleName = self.arguments[0]
        module = importlib.import_module(moduleName)
        names = _names(self.env.app)
        lines: list[str] = []
        for name in getattr(module, "__all__", ()):
            interface = getattr(module, name)
            if isinstance(interface, InterfaceClass):
                lines += self._interface(names, module, interface)
        content = StringList(lines, source=f"<autointerfaces {moduleName}>")
        container = nodes.section()
        nested_parse_with_titles(self.state, content, container)
        return list(container.children)

    def _docstring(
        self, names: Names, module: ModuleType, scope: Any, doc: str | None
    ) -> list[str]:
        lines = inspect.cleandoc(doc or "").splitlines()
        try:
            return cp_epytext.convert(
                lines, lambda target: names.qualify(target, module, scope)
            )
        except cp_epytext.EpytextError as e:
            _log.warning("%s: %s", scope.__identifier__, e, type="epytext")
            return lines

    def _interface(
        self, names: Names, module: ModuleType, interface: InterfaceClass
    ) -> list[str]:
        signatures = _sourceSignatures(module, interface.__name__)
        identifiers = [
            str(getattr(base, "__identifier__", base.__name__))
            for base in interface.__bases__
        ]
        bases = [
            names.qualify(identifier, module) or identifier
            for identifier in identifiers
            if identifier != "zope.interface.Interface"
        ]
        lines = [
            f".. py:class:: {interface.__name__}",
            f"   :module: {module.__name__}",
            "",
            "   *Interface*"
            + (
                " extending " + ", ".join(f":py:obj:`{b}`" for b in bases)
                if bases
                else ""
            )
            + ".",
            "",
        ]
        lines += _indent(self._docstring(names, module, interface, interface.__doc__))
        for name in interface.names():
            member = interface[name]
            lines.append("")
            if isinstance(member, Method):
                signature = signatures.get(name, member.getSignatureString())
                lines.append(f"   .. py:method:: {name}{signature}")
            elif isinstance(member, Attribute):
                lines.append(f"   .. py:attribute:: {name}")
            lines.append("")
            lines += _indent(
                self._docstring(names, module, interface, member.__doc__), 6
            )
        lines.append("")
        return lines


def _indent(lines: list[str], width: int = 3) -> list[str]:
    return [(" " * width + line) if line.strip() else "" for line in lines]


def _sourceSignatures(module: ModuleType, className: str) -> dict[str, str]:
    """
    The signatures of a class's methods as written in the source, with
    their annotations (which C{zope.interface} does not keep).
    """
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == className:
            return {
                item.name: f"({ast.unparse(item.args)})"
                + (f" -> {ast.unparse(item.returns)}" if item.returns else "")
                for item in node.body
                if isinstance(item, ast.FunctionDef)
            }
    return {}


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.add_config_value("cp_api_modules", [], "env")
    app.connect("autodoc-process-docstring", processDocstring)
    app.connect("autodoc-process-signature", processSignature)
    app.connect("autodoc-skip-member", skipMember)
    app.connect("missing-reference", missingReference)
    app.add_directive("autointerfaces", AutoInterfaces)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
