"""Client IP addresses reduced to their network: /24 for IPv4, /48 for IPv6."""

from __future__ import annotations

import ipaddress

_IPV4_MASK = (1 << 32) - (1 << 8)  # /24
_IPV6_MASK = (1 << 128) - (1 << 80)  # /48


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 203.0.113.7:4711
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def truncate_ip(value: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network address of an IP; None for what is not an IP."""
    address = _parse_ip(value)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & _IPV4_MASK))
    return str(ipaddress.IPv6Address(int(address) & _IPV6_MASK))
