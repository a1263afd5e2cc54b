"""A tenant's scaling.query reads only its own namespace, whatever it is written to ask for."""

import pytest

from inferfleet.planning.promql import (
    QueryRefusedError,
    build_confined_query,
    build_tenant_query,
)

NS = 'namespace="team-a"'


@pytest.mark.parametrize(
    ("query", "sent"),
    [
        # the example: another namespace's metric
        ('max(secret_metric{namespace="kube-system"})', f"max (secret_metric{{{NS}}})"),
        # hostile matchers on the namespace are replaced, not combined
        ('{__name__=~".+"}', f'{{__name__=~".+",{NS}}}'),
        ('foo{namespace=~".*"}', f"foo{{{NS}}}"),
        ('foo{namespace!="x"}', f"foo{{{NS}}}"),
        ('foo{namespace!~"team-a"}', f"foo{{{NS}}}"),
        ('foo{namespace="a", namespace="b"}', f"foo{{{NS}}}"),
        ('foo{`namespace`="kube-system"}', f"foo{{{NS}}}"),
        # other matchers are kept with their operators
        (
            'foo{job="x", code=~"5..", path!="/", m!~"a|b"}',
            f'foo{{job="x",code=~"5..",path!="/",m!~"a|b",{NS}}}',
        ),
        # inside functions, aggregations, ranges and subqueries
        ("rate(foo[5m])", f"rate(foo{{{NS}}}[5m])"),
        ("sum by (a) (rate(foo[1m]))", f"sum by (a) (rate(foo{{{NS}}}[1m]))"),
        ("sum without (pod) (foo)", f"sum without (pod) (foo{{{NS}}})"),
        ("topk(3, foo)", f"topk (3.0, foo{{{NS}}})"),
        ('count_values("v", foo)', f'count_values ("v", foo{{{NS}}})'),
        ("max_over_time(rate(x[1m])[5m:1m])", f"max_over_time(rate(x{{{NS}}}[1m])[5m:1m])"),
        ("rate(foo[5m:])", f"rate(foo{{{NS}}}[5m:])"),
        ("absent(nothing)", f"absent(nothing{{{NS}}})"),
        (
            'label_replace(foo, "namespace", "kube-system", "", "")',
            f'label_replace(foo{{{NS}}}, "namespace", "kube-system", "", "")',
        ),
        # binary operations and vector matching
        ("a / on(pod) group_left(node) b", f"a{{{NS}}} / on (pod) group_left (node) b{{{NS}}}"),
        ("a * ignoring(code) group_right b", f"a{{{NS}}} * ignoring (code) group_right () b{{{NS}}}"),
        ("foo and on() bar", f"foo{{{NS}}} and on () bar{{{NS}}}"),
        ("foo unless ignoring(x) bar", f"foo{{{NS}}} unless ignoring (x) bar{{{NS}}}"),
        ("foo > bool 3", f"foo{{{NS}}} > bool 3.0"),
        ("(a + b) * c", f"(a{{{NS}}} + b{{{NS}}}) * c{{{NS}}}"),
        ("a + b * c", f"a{{{NS}}} + (b{{{NS}}} * c{{{NS}}})"),
        ("-(a + b)", f"-(a{{{NS}}} + b{{{NS}}})"),
        ("time() - foo", f"time() - foo{{{NS}}}"),
        # @ and offset, on plain, range and subquery selectors
        ("foo @ 1700000000.5", f"foo{{{NS}}} @ 1700000000.500"),
        ("foo offset 5m", f"foo{{{NS}}} offset 5m"),
        ("rate(foo[5m] offset 1m @ 100)", f"rate(foo{{{NS}}}[5m] @ 100.000 offset 1m)"),
        ("max_over_time(foo[10m:1m] @ end())", f"max_over_time(foo{{{NS}}}[10m:1m] @ end())"),
        ("foo @ start()", f"foo{{{NS}}} @ start()"),
        # no selector at all: nothing to confine
        ("vector(1)", "vector(1.0)"),
    ],
)
def test_every_selector_reads_only_the_services_namespace(query: str, sent: str) -> None:
    assert build_tenant_query(query, "team-a") == sent


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        ('x\\"}) or secret{namespace=\\"kube-system', r'"x\"}) or secret{namespace=\"kube-system"'),
        ("a\\\\", r'"a\\"'),
        ("\\n\\u00e9", r'"\né"'),
    ],
)
def test_label_values_are_escaped_so_a_crafted_value_cannot_end_its_string(value: str, printed: str) -> None:
    # The parser's own printer writes `a="x"}) or secret{...`: a second, unconfined selector.
    sent = build_tenant_query(f'foo{{a="{value}"}}', "team-a")
    assert sent == f"foo{{a={printed},{NS}}}"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("foo{", "not valid PromQL: unexpected end of input inside braces"),
        ("holt_winters(foo[5m], 0.5, 0.5)", "not valid PromQL: unknown function with name 'holt_winters'"),
        ('foo{a="b" or c="d"}', "label matchers joined with `or` are not supported"),
        ("a * on(x) group_left fill(0) b", "fill() modifiers are not supported"),
        ("foo offset -5m", "negative offset values are not supported"),
        ("foo @ -100", "negative @ values are not supported"),
        ("x" * 4097, "the query is longer than 4096 characters"),
    ],
)
def test_queries_that_cannot_be_confined_are_refused_with_the_reason(query: str, message: str) -> None:
    with pytest.raises(QueryRefusedError) as refused:
        build_tenant_query(query, "team-a")
    assert str(refused.value) == message


def test_the_confined_query_is_remembered_with_its_refusal() -> None:
    assert build_confined_query("foo", "ml").query == 'foo{namespace="ml"}'
    refused = build_confined_query("foo{", "ml")
    assert refused.query is None
    assert refused.refusal == "not valid PromQL: unexpected end of input inside braces"
    assert build_confined_query("foo{", "ml") is refused
