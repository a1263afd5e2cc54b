"""A tenant's `scaling.query`, confined to the tenant's namespace (the prom-label-proxy rule).

`build_tenant_query(query, namespace)` parses the query with promql-parser and prints it back
with every vector and matrix selector (inside functions, aggregations, binary operations and
subqueries alike) carrying exactly one namespace matcher, `namespace="<namespace>"`: any matcher
on `namespace` the user wrote (equality, negative or regex) is replaced, so
`secret{namespace="kube-system"}`, `{__name__=~".+"}` or `x{namespace=~".*"}` read only the
tenant's own series.

The query is printed here, not with the parser's printer: that one writes label values without
escaping them (`a="x\\"y"` comes back as `a="x"y"`), which would let a crafted value end the
string and inject PromQL. The output is then parsed again and checked: same text when printed
again, and every selector confined. Anything unexpected is refused, never passed through.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser as pp

NAMESPACE_LABEL = "namespace"
MAX_QUERY_LENGTH = 4096
_IDENTIFIER = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
# The binding's enums are not hashable: looked up by equality.
_MATCH_OPS = (
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
)
_GROUPS = (
    (pp.VectorMatchCardinality.ManyToOne, "group_left"),
    (pp.VectorMatchCardinality.OneToMany, "group_right"),
)


def _lookup(table: tuple[tuple[Any, str], ...], key: Any) -> str | None:
    return next((text for k, text in table if k == key), None)


class QueryRefusedError(ValueError):
    """The query cannot run for a tenant; the message says why (shown in the service's status)."""


def build_tenant_query(query: str, namespace: str) -> str:
    """`query` with every selector confined to `namespace`; QueryRefusedError when it cannot be."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryRefusedError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    confined = _Printer(namespace).render(_parse(query))
    again = _parse(confined)
    if _Printer(namespace).render(again) != confined:
        raise QueryRefusedError("the query does not print back to itself; rewrite it more simply")
    _check_confined(again, namespace)
    return confined


def _parse(query: str) -> Any:
    try:
        return pp.parse(query)
    except BaseException as e:  # the Rust parser reports some inputs by panicking
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise QueryRefusedError(f"not valid PromQL: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _check_confined(expr: Any, namespace: str) -> None:
    selectors: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            selectors.append(node)
        return None

    pp.walk(expr, visit)
    for selector in selectors:
        ns = [m for m in selector.matchers.matchers if m.name == NAMESPACE_LABEL]
        if len(ns) != 1 or ns[0].op != pp.MatchOp.Equal or ns[0].value != namespace:
            raise QueryRefusedError("a selector escapes the service's namespace")
        if selector.matchers.or_matchers:
            raise QueryRefusedError("label matchers joined with `or` are not supported")


def _quote(text: str) -> str:
    # JSON's escapes (\" \\ \n \uXXXX) are valid in PromQL's double-quoted strings.
    return json.dumps(text, ensure_ascii=False)


def _labels(labels: list[str] | None) -> str:
    for label in labels or []:
        if not _IDENTIFIER.match(label):
            raise QueryRefusedError(f"unsupported label name {label!r}")
    return "(" + ", ".join(labels or []) + ")"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _duration(value: timedelta | None) -> str:
    if value is None or value <= timedelta(0):
        raise QueryRefusedError("durations must be positive")
    return str(pp.display_duration(value))


def _guarded(read: Any, what: str) -> Any:
    """An attribute the binding cannot convert (a negative offset or @ time) is refused."""
    try:
        return read()
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise QueryRefusedError(f"negative {what} values are not supported") from None


class _Printer:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def render(self, node: Any) -> str:
        if isinstance(node, pp.VectorSelector):
            return self._selector(node) + self._modifiers(node)
        if isinstance(node, pp.MatrixSelector):
            vs = node.vector_selector
            return f"{self._selector(vs)}[{_duration(node.range)}]{self._modifiers(vs)}"
        if isinstance(node, pp.SubqueryExpr):
            step = "" if node.step is None else _duration(node.step)
            return f"{self._operand(node.expr)}[{_duration(node.range)}:{step}]{self._modifiers(node)}"
        if isinstance(node, pp.Call):
            return f"{node.func.name}({', '.join(self.render(a) for a in node.args)})"
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, pp.BinaryExpr):
            modifier = self._bin_modifier(node.modifier)
            return f"{self._operand(node.lhs)} {node.op}{modifier} {self._operand(node.rhs)}"
        if isinstance(node, pp.UnaryExpr):
            return f"-{self._operand(node.expr)}"
        if isinstance(node, pp.ParenExpr):
            return self._operand(node)
        if isinstance(node, pp.NumberLiteral):
            return _number(node.val)
        if isinstance(node, pp.StringLiteral):
            return _quote(node.val)
        raise QueryRefusedError(f"unsupported expression {type(node).__name__}")

    def _operand(self, node: Any) -> str:
        """Compound operands in parentheses: the printed text parses to the same tree."""
        while isinstance(node, pp.ParenExpr):
            node = node.expr
        text = self.render(node)
        if isinstance(node, pp.BinaryExpr | pp.UnaryExpr | pp.SubqueryExpr):
            return f"({text})"
        return text

    def _selector(self, vs: Any) -> str:
        if vs.matchers.or_matchers:
            raise QueryRefusedError("label matchers joined with `or` are not supported")
        parts = []
        for m in vs.matchers.matchers:
            if m.name == NAMESPACE_LABEL:
                continue  # replaced by the service's own namespace
            if not _IDENTIFIER.match(m.name):
                raise QueryRefusedError(f"unsupported label name {m.name!r}")
            op = _lookup(_MATCH_OPS, m.op)
            if op is None:
                raise QueryRefusedError(f"unsupported matcher on {m.name!r}")
            parts.append(f"{m.name}{op}{_quote(m.value)}")
        parts.append(f"{NAMESPACE_LABEL}={_quote(self.namespace)}")
        name = vs.name or ""
        if name and not _METRIC_NAME.match(name):
            raise QueryRefusedError(f"unsupported metric name {name!r}")
        return f"{name}{{{','.join(parts)}}}"

    def _modifiers(self, node: Any) -> str:
        text = ""
        at = _guarded(lambda: node.at, "@")
        if at is not None:
            if at.type == pp.AtModifierType.Start:
                text += " @ start()"
            elif at.type == pp.AtModifierType.End:
                text += " @ end()"
            else:
                text += f" @ {_guarded(lambda: at.at.timestamp(), '@'):.3f}"
        offset = _guarded(lambda: node.offset, "offset")
        if offset is not None and offset < timedelta(0):
            raise QueryRefusedError("negative offset values are not supported")
        if offset:
            text += f" offset {_duration(offset)}"
        return text

    def _aggregate(self, node: Any) -> str:
        grouping = ""
        if node.modifier is not None:
            word = "by" if node.modifier.type == pp.AggModifierType.By else "without"
            grouping = f" {word} {_labels(node.modifier.labels)}"
        args = [self.render(node.expr)]
        if node.param is not None:
            args.insert(0, self.render(node.param))
        return f"{node.op}{grouping} ({', '.join(args)})"

    def _bin_modifier(self, modifier: Any) -> str:
        if modifier is None:
            return ""
        fill = modifier.fill_values
        if fill is not None and (fill.lhs is not None or fill.rhs is not None):
            raise QueryRefusedError("fill() modifiers are not supported")
        text = " bool" if modifier.return_bool else ""
        if modifier.matching is not None:
            word = "on" if modifier.matching.type == pp.LabelModifierType.Include else "ignoring"
            text += f" {word} {_labels(modifier.matching.labels)}"
        group = _lookup(_GROUPS, modifier.card)
        if group is not None:
            text += f" {group} {_labels(modifier.group_labels)}"
        return text


@dataclass(frozen=True)
class ConfinedQuery:
    query: str | None
    """What to send to Prometheus; None when refused."""
    refusal: str | None = None


@functools.lru_cache(maxsize=1024)
def build_confined_query(query: str, namespace: str) -> ConfinedQuery:
    """`build_tenant_query` as a value, remembered: a refused query is parsed once, not every tick."""
    try:
        return ConfinedQuery(build_tenant_query(query, namespace))
    except QueryRefusedError as e:
        return ConfinedQuery(None, str(e))
