"""cluster/grafana/voxray.json queries exactly the series voxray/metrics.py exports (no Ray started).

Exported names follow Ray 2.60's metrics agent (ray/_private/telemetry/open_telemetry_metric_recorder.py
registers `ray_<name>`; OpenTelemetry's Prometheus exporter adds `_total` to a counter unless the
name already ends in it, and `_bucket`/`_sum`/`_count` to a histogram).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

DASHBOARD = Path(__file__).resolve().parent.parent / "cluster" / "grafana" / "voxray.json"

# Declared metrics the dashboard may leave out, each with why. Empty today: every one is drawn.
SKIP: dict[str, str] = {}

# Labels Prometheus adds on scrape (not tags voxray declares); `le` only on histogram buckets.
SCRAPE_LABELS = {"instance", "job"}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                "and", "or", "unless", "inf", "nan"}


@dataclass(frozen=True)
class Declared:
    kind: str  # counter, gauge or histogram
    name: str  # as given to ray.util.metrics
    tag_keys: tuple[str, ...]

    def exported(self) -> set[str]:
        """The Prometheus series names Ray's metrics export serves for this metric."""
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return {base if base.endswith("_total") else f"{base}_total"}
        if self.kind == "histogram":
            return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        return {base}


def declared_metrics() -> list[Declared]:
    """Run voxray.metrics' registry with stand-ins for Ray's metric classes: the real names and
    tags, without ray.init (the registry only builds inside a Ray worker)."""
    import ray
    import ray.util.metrics as ray_metrics

    from voxray import metrics

    def stand_in(kind: str):
        def make(name: str, description: str = "", tag_keys=None, boundaries=None) -> Declared:
            return Declared(kind, name, tuple(tag_keys or ()))
        return make

    with mock.patch.object(ray, "is_initialized", return_value=True), \
            mock.patch.object(ray_metrics, "Counter", stand_in("counter")), \
            mock.patch.object(ray_metrics, "Gauge", stand_in("gauge")), \
            mock.patch.object(ray_metrics, "Histogram", stand_in("histogram")):
        registry = metrics._registry.__wrapped__()  # past lru_cache: never cache the stand-ins
    return list(registry.values())


def series_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors ($__rate_interval ...)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function or aggregation call, or an operator word
        names.add(m.group(0))
    return names


def label_names(expr: str) -> set[str]:
    """Labels the expression groups by or matches on."""
    labels = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def all_panels(dash: dict) -> list[dict]:
    """Every panel, rows included, and those nested in collapsed rows."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def exprs(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every query."""
    return [(p["title"], t["expr"]) for p in all_panels(dash) for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def dash() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def declared() -> list[Declared]:
    found = declared_metrics()
    assert len(found) >= 10, found  # the stand-ins saw the registry being built
    return found


def test_every_series_is_one_voxray_exports(dash, declared):
    exported = {s: d for d in declared for s in d.exported()}
    unknown = [(title, name) for title, expr in exprs(dash) for name in series_names(expr) if name not in exported]
    assert not unknown, unknown


def test_every_declared_metric_is_on_a_panel(dash, declared):
    used = {name for _, expr in exprs(dash) for name in series_names(expr)}
    missing = [d.name for d in declared if d.name not in SKIP and not d.exported() & used]
    assert not missing, missing
    assert set(SKIP) <= {d.name for d in declared}, "SKIP names a metric that is no longer declared"


def test_labels_are_declared_tags(dash, declared):
    exported = {s: d for d in declared for s in d.exported()}
    wrong = []
    for title, expr in exprs(dash):
        ds = [exported[n] for n in series_names(expr) if n in exported]
        allowed = SCRAPE_LABELS | {k for d in ds for k in d.tag_keys}
        if any(d.kind == "histogram" for d in ds):
            allowed.add("le")
        wrong += [(title, label) for label in label_names(expr) - allowed]
    assert not wrong, wrong


def test_cumulative_series_go_through_rate(dash, declared):
    """Counters and histogram series only make sense as rates; quantiles need the buckets."""
    cumulative = {s for d in declared if d.kind != "gauge" for s in d.exported()}
    bare = []
    for title, expr in exprs(dash):
        for name in series_names(expr) & cumulative:
            if not re.search(rf"\b(?:rate|irate|increase)\(\s*{re.escape(name)}\b", expr):
                bare.append((title, name))
        if "histogram_quantile" in expr and not re.search(r"_bucket\b", expr):
            bare.append((title, "histogram_quantile without _bucket"))
    assert not bare, bare


def test_panel_ids_unique_and_grouped_in_rows(dash):
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert dash["panels"][0]["type"] == "row", "panels are grouped under rows"
    assert sum(p["type"] == "row" for p in dash["panels"]) >= 3


def test_datasource_is_the_template_variable(dash):
    assert dash["uid"] == "voxray"
    var = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
    assert var and var[0]["type"] == "datasource" and var[0]["query"] == "prometheus", var
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_checks_catch_a_typo(declared):
    """The name checks can fail: a misspelt series and a counter without `_total` are unknown."""
    exported = {s for d in declared for s in d.exported()}
    assert series_names('sum by (path) (rate(ray_voxray_calls_totl{path="/call"}[5m]))') == {"ray_voxray_calls_totl"}
    assert "ray_voxray_calls_totl" not in exported
    assert "ray_voxray_calls_refused" not in exported  # counters are served with `_total` only
    assert "ray_voxray_asr_latency_ms" not in exported  # histograms only as _bucket/_sum/_count
    assert "voxray_calls_active" not in exported  # without Ray's prefix
    assert series_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval]))) / y") == {
        "x_bucket", "y"}
