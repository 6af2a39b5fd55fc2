"""The image's HEALTHCHECK: is `serve` alive? Exit 0 if /healthz answers 200, else 1.

FORGETMENOT_HEALTHCHECK_URL overrides the address (default http://127.0.0.1:9464/healthz), for a
serve started with another --port or with TLS (https: the certificate is not checked, it is
loopback). /healthz needs no credentials. Standard library only.
"""

import os
import ssl
import sys
import urllib.request

url = os.environ.get("FORGETMENOT_HEALTHCHECK_URL", "http://127.0.0.1:9464/healthz")
context = ssl._create_unverified_context() if url.startswith("https:") else None
try:
    with urllib.request.urlopen(url, timeout=4, context=context) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy"
    print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
