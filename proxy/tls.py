"""Optional HTTPS straight from calrelay (``[server] tls_certificate`` and ``tls_key``).

For an iPhone or Mac on the LAN that adds calrelay as a CalDAV account without a reverse proxy. TLS 1.2 is the
floor; the certificate file may hold the chain after the leaf.
"""

from __future__ import annotations

import ssl

from proxy.config import ConfigError, Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None for plain HTTP (loopback, or behind a TLS proxy)."""
    certificate, key = settings.server.tls_certificate, settings.server.tls_key
    if certificate is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"server.tls_certificate / server.tls_key: cannot load {certificate} with {key}: {error}"
        ) from None
    return context
