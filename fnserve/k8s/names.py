"""Kubernetes names and labels of fnserve's objects, derived from function and version names.

Labels carry the exact function and version (both are valid label values once they end in a
letter or digit), so the platform reads them back from any object, EndpointSlices included.
Object names must be DNS-1035 labels (lowercase, at most 63 characters), so they are derived:
lowercased, other characters turned into ``-``, and a short hash added whenever that lost
information — two different names never map to one object name by that route.

>>> version_name("recs", "3"), version_name("recs", "canary"), function_name("recs")
('fn-recs-v3', 'fn-recs-canary', 'fn-recs')
>>> version_name("Recs", "v1.2")
'fn-recs-v1-2-d1f8a2'
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "fn"
MANAGED_BY = "fnserve"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
FUNCTION_LABEL = "fnserve.dev/function"
VERSION_LABEL = "fnserve.dev/version"
GATEWAY = "fnserve-gateway"
_DNS_MAX = 63
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def label_value(what: str, value: str) -> str:
    """``value`` unchanged if Kubernetes accepts it as a label value; else a ``ValueError``."""
    if not _LABEL_VALUE.match(value):
        raise ValueError(
            f"{what} {value!r} cannot be a Kubernetes label: use at most 63 letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit"
        )
    return value


def dns_name(*parts: str) -> str:
    """``parts`` joined by ``-`` as a DNS-1035 label; a hash keeps lossy mappings distinct."""
    joined = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]", "-", joined.lower())
    if name == joined and len(name) <= _DNS_MAX:
        return name
    digest = hashlib.sha256(joined.encode()).hexdigest()[:6]
    return f"{name[: _DNS_MAX - 7].rstrip('-')}-{digest}"


def function_name(function: str) -> str:
    """The function's Service (all its versions) and its state ConfigMap."""
    return dns_name(PREFIX, function)


def version_name(function: str, version: str) -> str:
    """One version's Deployment, headless Service, HPA and PDB: ``fn-recs-v3``."""
    part = f"v{version}" if version[:1].isdigit() else version
    return dns_name(PREFIX, function, part)


def function_labels(function: str, component: str) -> dict[str, str]:
    return {
        NAME_LABEL: label_value("function name", function),
        COMPONENT_LABEL: component,
        MANAGED_LABEL: MANAGED_BY,
        FUNCTION_LABEL: function,
    }


def version_selector(function: str, version: str) -> dict[str, str]:
    """The (immutable) pod selector of one version's Deployment."""
    return {FUNCTION_LABEL: function, VERSION_LABEL: label_value("version label", version)}


def version_labels(function: str, version: str) -> dict[str, str]:
    return {**function_labels(function, "function"), **version_selector(function, version)}


def gateway_labels() -> dict[str, str]:
    return {NAME_LABEL: GATEWAY, COMPONENT_LABEL: "gateway", MANAGED_LABEL: MANAGED_BY}
