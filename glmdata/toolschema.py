"""A tool's ``parameters``, the JSON Schema of its arguments: is it valid, do a call's arguments fit.

:func:`tool_schema` gives a :class:`ToolSchema` with the two answers: ``.problem`` (None when the
schema is valid) and ``.check_arguments(arguments)``. jsonschema (Draft 2020-12) is the reference.
Tool schemas mostly keep to a few keywords (``type``, ``enum``, ``properties``, ``items``,
``required``, ``description`` ...): for those one plain-Python walk, one function per keyword,
checks the schema against the meta-schema and compiles it into predicates, both held equal to
jsonschema by tests/test_toolschema.py; anything else goes to jsonschema. The walk pays (measured
on the 529 parameter schemas of the 1k Glaive set): jsonschema takes 1.1 ms to check a schema
against the meta-schema (and 60-80 ms to import), 4-6 us to check one argument; the walk about
10 us per schema, well under 1 us per argument.

What a schema says is worked out once per structure: the schema without its description texts,
which constrain nothing and are what varies from one declaration of a tool to the next (the 1k
Glaive set declares 804 tools with 529 distinct parameter texts and 292 distinct structures).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, Literal, NamedTuple

from glmdata.jsontext import canonical, loads

__all__ = ["ArgumentProblem", "ToolSchema", "tool_schema"]

Check = Callable[[Any], bool]  #: does a value match a schema?
Errors = list[tuple[str, str]]  #: (place in the schema, message) for each error found


class ArgumentProblem(NamedTuple):
    """One way a call's arguments do not fit the tool's parameters."""

    code: Literal["missing-argument", "unknown-argument", "argument-type"]
    argument: str  #: the argument's name


def tool_schema(parameters: dict[str, Any]) -> ToolSchema:
    """What a tool's ``parameters`` say, as the JSON Schema of its arguments (an object): whether
    the schema is valid (``.problem``), and how a call's arguments fit it (``.check_arguments``).
    Worked out once per structure (the schema without its description texts) and cached."""
    return _by_structure(canonical(_structure(parameters)))


def _structure(schema: Any) -> Any:
    """``schema`` without its texts: a string ``description``, ``title`` or ``$comment`` where
    the walk of ``_KEYWORDS`` knows a schema is (a property named "description" stays). They
    constrain nothing, and they are what varies from one declaration of a tool to the next."""
    if type(schema) is not dict:
        return schema
    structure = schema.copy()
    if type(structure.pop("description", None)) is not str and "description" in schema:
        structure["description"] = schema["description"]  # not a text: invalid, and kept to say so
    if "title" in schema or "$comment" in schema:
        for name in ("title", "$comment"):
            if type(schema.get(name)) is str:
                del structure[name]
    properties = schema.get("properties")
    if type(properties) is dict:
        structure["properties"] = nested = {}
        for key, sub in properties.items():  # a loop, not a comprehension: one frame a level
            nested[key] = _structure(sub)
    if "items" in schema:
        structure["items"] = _structure(schema["items"])
    if "additionalProperties" in schema:
        structure["additionalProperties"] = _structure(schema["additionalProperties"])
    return structure


@lru_cache(maxsize=1024)
def _by_structure(key: bytes) -> ToolSchema:
    # Built from the key (canonical JSON, as glmdata writes a row: orjson writes NaN and the
    # infinities as null), not from the caller's value: every schema of one structure gets the
    # same answers, whichever of them came first.
    return ToolSchema(loads(key))


class ToolSchema:
    """What one parameters schema says (get it from :func:`tool_schema`, which caches it).

    ``problem``: what is wrong with it as the JSON Schema of a call's arguments, worded as
    jsonschema's ``check_schema`` words it; None when it is valid. ``check_arguments``: how a
    call's arguments do not fit it."""

    __slots__ = ("checks", "problem", "properties", "required")

    def __init__(self, parameters: dict[str, Any]):
        required = parameters.get("required")
        # names only: anything else in the list is an invalid schema, which `problem` reports
        self.required = [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
        properties = parameters.get("properties")
        self.properties = frozenset(properties) if isinstance(properties, dict) else None
        # One walk, keyword by keyword, for the validity of the whole and each property's check.
        errors: Errors = []
        sure = True  # of the errors: no keyword or value the walk leaves to jsonschema
        compiled: dict[str, Check | None] = {}  # property -> its plain check; None: not sure
        broken: set[str] = set()  # properties whose own schema has errors
        for name, value in parameters.items():
            if name == "properties" and isinstance(value, dict):
                for key, schema in value.items():
                    found = len(errors)
                    compiled[key] = check = _compile(schema, f"properties/{key}", errors)
                    sure = sure and check is not None
                    if len(errors) > found:
                        broken.add(key)
            else:
                keyword = _KEYWORDS.get(name)
                sure = sure and keyword is not None and keyword(value, parameters, name, errors) is not None
        self.problem = _problem(parameters, sure, errors)
        #: property -> does a value match its schema? (properties that constrain nothing left out)
        self.checks: dict[str, Check] = {}
        for key, check in compiled.items():
            if key in broken:
                continue
            if check is None:
                check = self._jsonschema_check(parameters["properties"][key], parameters)
            if check is not None and check is not _anything:
                self.checks[key] = check

    def check_arguments(self, arguments: dict[str, Any]) -> list[ArgumentProblem]:
        """How a call's (parsed) ``arguments`` do not fit: each required argument that is
        missing, in the order ``required`` lists them; then, in the order of ``arguments``, each
        that ``properties`` does not declare and each whose value does not match its property's
        schema. Without ``properties`` no argument is unknown; a property whose own schema is
        broken checks nothing (``problem`` tells), nor does a ``$ref`` that resolves nowhere."""
        problems = [ArgumentProblem("missing-argument", key) for key in self.required if key not in arguments]
        if self.properties is not None:
            for key, value in arguments.items():
                if key not in self.properties:
                    problems.append(ArgumentProblem("unknown-argument", key))
                elif (check := self.checks.get(key)) is not None and not check(value):
                    problems.append(ArgumentProblem("argument-type", key))
        return problems

    def _jsonschema_check(self, schema: dict[str, Any], parameters: dict[str, Any]) -> Check | None:
        """A property the walk is not sure of, checked by jsonschema within the tool's schema
        (where ``$ref: "#/$defs/..."`` resolves) when that is valid, else alone if it is valid."""
        if self.problem is None:
            return _jsonschema_check(schema, parameters)
        return _jsonschema_check(schema, None) if _jsonschema_problem(schema) is None else None


def _problem(parameters: dict[str, Any], sure: bool, errors: Errors) -> str | None:
    if parameters.get("type", "object") != "object":
        return f"parameters must describe an object, not {parameters.get('type')!r}"
    if sure and not errors:
        return None
    if sure and len(errors) == 1:  # more than one: jsonschema picks which to tell
        where, message = errors[0]
        return f"not a valid JSON Schema at {where or 'root'}: {message}"
    return _jsonschema_problem(parameters)


# ------------------------------------------------------------------------------ jsonschema


def _jsonschema_problem(schema: dict[str, Any]) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "root"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    return None


def _jsonschema_check(schema: dict[str, Any], root: dict[str, Any] | None) -> Check:
    from jsonschema import Draft202012Validator
    from referencing.exceptions import Unresolvable

    validator = Draft202012Validator(schema) if root is None else Draft202012Validator(root).evolve(schema=schema)

    def check(value: Any) -> bool:
        try:
            return validator.is_valid(value)
        except Unresolvable:  # a reference that resolves nowhere cannot be checked
            return True

    return check


# ------------------------------------------------------------------------------ the plain walk


def _compile(schema: Any, where: str, errors: Errors) -> Check | None:
    """Check ``schema`` against the Draft 2020-12 meta-schema and compile it into a predicate
    equal to jsonschema's ``is_valid``, as far as it keeps to the keywords of ``_KEYWORDS``: adds
    ``(where, message)`` to ``errors`` for each value of the wrong shape, worded as jsonschema's
    ``check_schema`` words it (the predicate then means nothing). None when not sure (another
    keyword, a value the walk leaves to jsonschema): jsonschema decides, and explains."""
    if isinstance(schema, bool):
        return _anything if schema else _nothing
    if not isinstance(schema, dict):
        errors.append((where, f"{schema!r} is not of type 'object', 'boolean'"))
        return _anything
    checks = []
    for name, value in schema.items():
        keyword = _KEYWORDS.get(name)
        check = keyword(value, schema, f"{where}/{name}" if where else name, errors) if keyword else None
        if check is None:
            return None
        if check is not _anything:
            checks.append(check)
    if len(checks) <= 1:
        return checks[0] if checks else _anything
    return partial(_all, tuple(checks))


def _anything(value: Any) -> bool:
    return True


def _nothing(value: Any) -> bool:
    return False


# The predicates of schemas that hold others loop instead of calling all() on a generator: a
# generator is one more frame a level, and deep values would reach the recursion limit sooner.


def _all(checks: tuple[Check, ...], value: Any) -> bool:
    for check in checks:  # noqa: SIM110 - see above
        if not check(value):
            return False
    return True


_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_SCALARS = (str, bool, int, float, type(None))


def _type(value: Any, schema: dict, where: str, errors: Errors) -> Check | None:
    if isinstance(value, str):
        if value in _TYPES:
            return _TYPES[value]
        errors.append((where, f"{value!r} is not valid under any of the given schemas"))
        return _anything
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v in _TYPES for v in value)
        and len(set(value)) == len(value)
    ):
        types = tuple(_TYPES[v] for v in value)
        return lambda v: any(check(v) for check in types)
    return None  # not sure: jsonschema decides


def _annotation(value: Any, schema: dict, where: str, errors: Errors) -> Check:
    """``description``, ``title``, ``$comment``, ``format``: texts that constrain nothing (a
    ``format`` is asserted only with a format checker, and arguments are checked without)."""
    if not isinstance(value, str):
        errors.append((where, f"{value!r} is not of type 'string'"))
    return _anything


def _default(value: Any, schema: dict, where: str, errors: Errors) -> Check:
    return _anything


def _examples(value: Any, schema: dict, where: str, errors: Errors) -> Check:
    if not isinstance(value, list):
        errors.append((where, f"{value!r} is not of type 'array'"))
    return _anything


def _equal(a: Any, b: Any) -> bool:
    """JSON equality of two scalars: numbers by value (1 == 1.0, but True is not 1), the rest by
    type and value."""
    if type(a) in (int, float) and type(b) in (int, float):
        return a == b
    return type(a) is type(b) and a == b


def _enum(value: Any, schema: dict, where: str, errors: Errors) -> Check | None:
    if not isinstance(value, list):
        errors.append((where, f"{value!r} is not of type 'array'"))
        return _anything
    if all(type(v) is str for v in value):  # the usual enum: a set lookup
        allowed = frozenset(value)
        return lambda v: type(v) is str and v in allowed
    if all(isinstance(v, _SCALARS) for v in value):
        return lambda v: any(_equal(v, e) for e in value)
    return None


def _const(value: Any, schema: dict, where: str, errors: Errors) -> Check | None:
    return (lambda v: _equal(v, value)) if isinstance(value, _SCALARS) else None


def _required(value: Any, schema: dict, where: str, errors: Errors) -> Check:
    if not isinstance(value, list):
        errors.append((where, f"{value!r} is not of type 'array'"))
        return _anything
    errors.extend(
        (f"{where}/{i}", f"{v!r} is not of type 'string'") for i, v in enumerate(value) if not isinstance(v, str)
    )
    # two equal non-names are two errors already; a name equals no non-name
    names = [v for v in value if isinstance(v, str)]
    if len(set(names)) != len(names):
        errors.append((where, f"{value!r} has non-unique elements"))
    if not names:
        return _anything
    return lambda v: not isinstance(v, dict) or all(key in v for key in names)


def _properties(value: Any, schema: dict, where: str, errors: Errors) -> Check | None:
    if not isinstance(value, dict):
        errors.append((where, f"{value!r} is not of type 'object'"))
        return _anything
    checks = {}
    for name, sub in value.items():
        check = _compile(sub, f"{where}/{name}", errors)
        if check is None:
            return None
        if check is not _anything:
            checks[name] = check
    if not checks:
        return _anything

    def match(v: Any) -> bool:
        if isinstance(v, dict):
            for key, check in checks.items():
                if key in v and not check(v[key]):
                    return False
        return True

    return match


def _additional_properties(value: Any, schema: dict, where: str, errors: Errors) -> Check | None:
    check = _compile(value, where, errors)
    if check is None or check is _anything:
        return check
    properties = schema.get("properties")
    declared = frozenset(properties) if isinstance(properties, dict) else frozenset()

    def match(v: Any) -> bool:
        if isinstance(v, dict):
            for key, item in v.items():
                if key not in declared and not check(item):
                    return False
        return True

    return match


def _items(value: Any, schema: dict, where: str, errors: Errors) -> Check | None:
    check = _compile(value, where, errors)
    if check is None or check is _anything:
        return check

    def match(v: Any) -> bool:
        if isinstance(v, list):
            for item in v:
                if not check(item):
                    return False
        return True

    return match


# keyword -> (its value, the schema, where, errors) -> its predicate, _anything when it
# constrains nothing, None when the walk leaves the schema to jsonschema
_KEYWORDS: dict[str, Callable[[Any, dict, str, Errors], Check | None]] = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "required": _required,
    "properties": _properties,
    "additionalProperties": _additional_properties,
    "items": _items,
    "description": _annotation,
    "title": _annotation,
    "$comment": _annotation,
    "format": _annotation,
    "default": _default,
    "examples": _examples,
}
