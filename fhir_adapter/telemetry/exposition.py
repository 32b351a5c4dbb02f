"""The text `/metrics` answers with: this process's metrics, or every worker's when the server
runs several (prometheus-client's multiprocess mode), then the queue figures read from the store."""

from __future__ import annotations

import ipaddress
import os

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def render(*extra: Collector) -> bytes:
    """Every counter and histogram (summed over the workers in multiprocess mode), then `extra`."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if extra:
        more = CollectorRegistry(auto_describe=False)
        for collector in extra:
            more.register(collector)
        text += generate_latest(more)
    return text


def parse_networks(allowed: str) -> tuple[IPNetwork, ...]:
    """`FHIR_ADAPTER_METRICS_ALLOW`: comma-separated addresses or networks; `*` is everyone."""
    items = [item.strip() for item in allowed.split(",") if item.strip()]
    if "*" in items:
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def allowed(address: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)
