"""The client address of a request, believing forwarding headers only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses (``10.0.0.0/8``, ``127.0.0.1``) as networks."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _forwarded_for(headers: dict[str, str]) -> list[str]:
    """Hops named by X-Forwarded-For, else by the RFC 7239 Forwarded header, client first."""
    x_forwarded_for = headers.get("x-forwarded-for")
    if x_forwarded_for:
        return [hop.strip() for hop in x_forwarded_for.split(",") if hop.strip()]
    forwarded = headers.get("forwarded")
    hops: list[str] = []
    if forwarded:
        for element in forwarded.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for" and value:
                    value = value.strip('"')
                    if value.startswith("["):  # [2001:db8::1]:4711
                        value = value[1:].split("]", 1)[0]
                    elif value.count(":") == 1:  # 192.0.2.60:4711
                        value = value.split(":", 1)[0]
                    hops.append(value)
    return hops


def client_ip(peer: str | None, headers: dict[str, str], trusted: tuple[Network, ...]) -> str | None:
    """The peer address, or, when the peer is a trusted proxy, the nearest untrusted hop it names.

    Walking from the right stops a client from spoofing its address by sending its own
    X-Forwarded-For: only hops appended by trusted proxies are skipped.
    """
    if peer is None or not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = _forwarded_for(headers)
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
