"""Homeserver A's public address in the federation suite, as an operator deploys media-ledger
beside a federating Synapse: one TLS listener (the port in A's server name); the media routes
go to media-ledger and everything else (client API, federation, `/_matrix/key/v2/server`) to
Synapse.

Routed to media-ledger: /_matrix/media/*, /_matrix/client/v1/media/* and
/_matrix/federation/v1/media/* (other servers fetch A's media there, signed with X-Matrix;
media-ledger checks the signature with the origin's published keys). Bodies are streamed both
ways; the client's Host is passed on (media-ledger picks the homeserver by it, and a federation
request's `destination` is checked against it) with X-Forwarded-For/-Proto.

usage: tls_proxy.py LISTEN_PORT CERT_PEM KEY_PEM SYNAPSE_URL MEDIA_LEDGER_URL
"""

import os
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "real_synapse"))
from proxy import serve  # noqa: E402  (the suites' one reverse proxy)

MEDIA_PREFIXES = (
    "/_matrix/media/",
    "/_matrix/client/v1/media/",
    "/_matrix/federation/v1/media/",
)


def main() -> None:
    port, cert, key, synapse, ledger = (
        int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    serve(
        port,
        lambda method, path: ledger if path.startswith(MEDIA_PREFIXES) else synapse,
        ssl_context=tls,
    )


if __name__ == "__main__":
    main()
