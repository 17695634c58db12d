"""The container's HEALTHCHECK: GET /healthz on this container's listener, exit 0 when 200.

Reads the same settings as `qes serve` would not (it must be cheap): the port from
QES_HEALTH_PORT or 8443, https when QES_HEALTH_SCHEME says so (default: https when
QES__SERVER__TLS__CERTIFICATE_FILE is set or the mounted config has a [server.tls] table).
The certificate is not verified: the check talks to 127.0.0.1, where the name cannot match.
"""

import os
import ssl
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("QES_HEALTH_PORT", "8443")
    scheme = os.environ.get("QES_HEALTH_SCHEME", "")
    if not scheme:
        config = os.environ.get("QES_CONFIG", "/etc/qes-signer/qes.toml")
        try:
            with open(config, encoding="utf-8") as f:
                tls = "[server.tls]" in f.read()
        except OSError:
            tls = False
        scheme = "https" if tls or "QES__SERVER__TLS__CERTIFICATE_FILE" in os.environ else "http"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(  # noqa: S310 (a fixed loopback URL)
            f"{scheme}://127.0.0.1:{port}/healthz", timeout=4, context=context
        ) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
