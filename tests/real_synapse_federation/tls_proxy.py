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

import ssl
import sys

from aiohttp import ClientSession, ClientTimeout, web
from yarl import URL

MEDIA_PREFIXES = (
    "/_matrix/media/",
    "/_matrix/client/v1/media/",
    "/_matrix/federation/v1/media/",
)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def main() -> None:
    port, cert, key, synapse, ledger = (
        int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(
            auto_decompress=False, timeout=ClientTimeout(total=300)
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        upstream = ledger if request.path.startswith(MEDIA_PREFIXES) else synapse
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        }
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Proto"] = request.scheme

        async def body():
            async for chunk in request.content.iter_chunked(65536):
                yield chunk

        data = body() if request.body_exists else None
        async with request.app["session"].request(
            request.method,
            # As received: a federation request's signature covers the path and query byte
            # for byte, so the proxy must not re-encode them (yarl would decode %21, %40, %3A).
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        ) as up:
            out = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    out.headers.add(k, v)
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in up.content.iter_chunked(65536):
                    await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application(client_max_size=0)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=tls, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
