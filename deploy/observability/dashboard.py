"""The arrpc-host Grafana dashboard, as code: build-dashboard.sh runs this
with grafana-foundation-sdk and writes dashboard.json, which is checked in
(import it in Grafana, or let a provisioning sidecar pick it up).
tests/observability.rs regenerates it, compares it with the checked-in
file, and evaluates every panel's query against a real Prometheus.

Queries use Grafana's $__rate_interval; the test reads it as 1m.
"""

import json
import sys

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend)


def panel(title: str, unit: str, description: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    built = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(12)
        .height(8)
    )
    for q in queries:
        built = built.with_target(q)
    return built


def rate(metric: str, by: str, matchers: str = "") -> str:
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    return f"sum by ({by}) (rate({selector}[$__rate_interval]))"


def build() -> dashboard.Dashboard:
    quantile = lambda q: query(
        f"histogram_quantile({q}, sum by (handler, le) (rate(arrpc_handler_seconds_bucket[$__rate_interval])))",
        f"{{{{handler}}}} p{int(q * 100)}",
    )
    return (
        dashboard.Dashboard("arrpc-host")
        .uid("arrpc-host")
        .tags(["arrpc"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
        .with_row(dashboard.Row("Messages"))
        .with_panel(panel(
            "Messages by handler and outcome", "reqps",
            "Every message, by the handler it reached and how it ended (docs/operations.md#metrics).",
            query(rate("arrpc_messages_total", "handler, outcome"), "{{handler}} {{outcome}}"),
        ))
        .with_panel(panel(
            "Handler latency", "s",
            "The handler's run, instantiation included: p50, p90 and p99.",
            quantile(0.5), quantile(0.9), quantile(0.99),
        ))
        .with_panel(panel(
            "Busy and limit refusals", "reqps",
            "Messages refused as busy (max_instances reached) or stopped by a limit.",
            query(
                rate("arrpc_messages_total", "handler, outcome", 'outcome=~"busy|timeout|memory_limit|fuel_limit"'),
                "{{handler}} {{outcome}}",
            ),
        ))
        .with_panel(panel(
            "Instances in use", "short",
            "Messages running now against the instances the handlers may run (their max_instances).",
            query("sum by (instance) (arrpc_messages_in_flight)", "{{instance}} in use"),
            query("sum by (instance) (arrpc_handler_max_instances)", "{{instance}} max_instances"),
        ))
        .with_row(dashboard.Row("Changes and security"))
        .with_panel(panel(
            "Hot swaps and reloads", "short",
            "Module swaps and config reloads, applied (ok) or refused (failed).",
            query("sum by (result) (increase(arrpc_handler_swaps_total[$__rate_interval]))", "{{result}}"),
        ))
        .with_panel(panel(
            "TLS handshake failures", "reqps",
            "Failed handshakes on the message port, by reason.",
            query(rate("arrpc_tls_handshake_failures_total", "reason"), "{{reason}}"),
        ))
        .with_panel(panel(
            "Certificate and SVID expiry", "s",
            "Time left on each served or trusted certificate; rotation should keep it far from zero.",
            query("arrpc_tls_certificate_expiry_timestamp_seconds - time()", "{{role}} {{subject}}"),
        ))
        .with_panel(panel(
            "Access refusals", "reqps",
            "Callers a handler's allow list refused, by handler.",
            query(rate("arrpc_access_decisions_total", "handler", 'result="refused"'), "{{handler}}"),
        ))
        .with_row(dashboard.Row("Clients, outbound calls and stores"))
        .with_panel(panel(
            "Client balancing", "short",
            "From the Rust client's own /metrics: replicas by state, retries and ejections.",
            query("sum by (state) (arrpc_client_endpoints)", "replicas {{state}}"),
            query("sum(rate(arrpc_client_retries_total[$__rate_interval]))", "retries/s"),
            query("sum(increase(arrpc_client_ejections_total[$__rate_interval]))", "ejections"),
        ))
        .with_panel(panel(
            "Outbound calls", "reqps",
            "Handlers' HTTP requests, TCP connections and upstream calls, by result.",
            query(rate("arrpc_outbound_requests_total", "handler, kind, result"), "{{handler}} {{kind}} {{result}}"),
        ))
        .with_panel(panel(
            "Store operations", "reqps",
            "Key-value store operations, by store, operation and result.",
            query(rate("arrpc_store_operations_total", "store, operation, result"), "{{store}} {{operation}} {{result}}"),
        ))
    )


if __name__ == "__main__":
    json.dump(build().build(), sys.stdout, cls=JSONEncoder, indent=2, sort_keys=True)
    sys.stdout.write("\n")
