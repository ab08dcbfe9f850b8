"""Where a registry's API lives: https, or plain http for loopback and insecure registries."""

from __future__ import annotations

import os
from collections.abc import Mapping

from yarl import URL

from modelrunner.core.distribution.credentials import registry_key
from modelrunner.core.references import DEFAULT_REGISTRY
from modelrunner.core.settings import Settings

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def insecure_registries(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """Hosts reached over plain http: settings, INSECURE_REGISTRY ("true": all), the env list."""
    env = os.environ if environ is None else environ
    hosts = {registry_key(h) for h in getattr(settings, "insecure_registries", ()) or ()}
    for variable in ("INSECURE_REGISTRY", "MODELRUNNER_INSECURE_REGISTRIES"):
        for item in env.get(variable, "").split(","):
            item = item.strip()
            if item.lower() in ("1", "true", "yes", "on"):
                hosts.add("*")
            elif item and item.lower() not in ("0", "false", "no", "off"):
                hosts.add(registry_key(item))
    return frozenset(hosts)


def registry_base_url(registry: str, insecure: frozenset[str] = frozenset()) -> URL:
    """Where a registry's API lives: Docker Hub via registry-1, loopback hosts over plain http."""
    if registry == DEFAULT_REGISTRY:
        return URL("https://registry-1.docker.io")
    key = registry_key(registry)
    hostname = key[: key.index("]") + 1] if key.startswith("[") else key.partition(":")[0]
    plain = (
        hostname in _LOOPBACK_HOSTS
        or hostname.endswith(".local")  # DMR: mDNS hosts are local-network registries
        or "*" in insecure
        or key in insecure
        or hostname in insecure
    )
    return URL(f"{'http' if plain else 'https'}://{key}")


def repository_scope(repository: str, *actions: str) -> str:
    """A token scope: "repository:ai/x:pull" or "repository:ai/x:pull,push"."""
    return f"repository:{repository}:{','.join(actions)}"


def origin(url: URL) -> tuple[str, str, int | None]:
    """Scheme, host and port: credentials are only sent where these match the registry's."""
    return (url.scheme, url.host or "", url.port)
