"""The reverse proxy of the real-Synapse suite, as an operator deploys media-ledger: one
public listener; the media routes go to media-ledger, everything else to Synapse.

Routed to media-ledger: /_matrix/media/* (the legacy media API and the admin API under
unstable/admin and unstable/io.t2bot.media/admin), /_matrix/client/v1/media/* (the
authenticated media API), POST /_matrix/client/{r0,v3}/logout and logout/all (media-ledger
passes them on to the homeserver and forgets the token at once) and the media part of Synapse's
admin API under /_synapse/admin/v1 (README's nginx regex). Bodies are streamed both ways; the client's Host is passed on
(media-ledger picks the homeserver by it) with X-Forwarded-For/-Proto. The federation suite's
TLS proxy (`tests/real_synapse_federation/tls_proxy.py`) runs the same `serve`.

usage: proxy.py LISTEN_PORT SYNAPSE_URL MEDIA_LEDGER_URL
"""

import re
import sys

from aiohttp import ClientSession, ClientTimeout, web
from yarl import URL

MEDIA_PREFIXES = ("/_matrix/media/", "/_matrix/client/v1/media/")
LOGOUT_PATHS = {
    f"/_matrix/client/{v}/logout{tail}" for v in ("r0", "v3") for tail in ("", "/all")
}
# The media part of Synapse's admin API (README's nginx location, "Deploying beside Synapse").
SYNAPSE_MEDIA_ADMIN = re.compile(
    r"^/_synapse/admin/v1/(media/|purge_media_cache$|statistics/users/media$|quarantine_media/"
    r"|users/[^/]+/media$|user/[^/]+/media/quarantine$|room/[^/]+/media/quarantine$)"
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


def upstream_for(method: str, path: str, synapse: str, ledger: str) -> str:
    if (
        path.startswith(MEDIA_PREFIXES)
        or (method == "POST" and path in LOGOUT_PATHS)
        or SYNAPSE_MEDIA_ADMIN.match(path)
    ):
        return ledger
    return synapse


def serve(port: int, route, ssl_context=None) -> None:
    """Runs the proxy on 127.0.0.1:`port` until killed: `route(method, path)` gives the
    upstream base URL of each request. The path and query go on as received (a federation
    request's signature covers them byte for byte: yarl must not decode %21, %40, %3A)."""

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(
            auto_decompress=False, timeout=ClientTimeout(total=300)
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        upstream = route(request.method, request.path)
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
    web.run_app(
        app, host="127.0.0.1", port=port, ssl_context=ssl_context, print=None, access_log=None
    )


def main() -> None:
    port, synapse, ledger = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    serve(port, lambda method, path: upstream_for(method, path, synapse, ledger))


if __name__ == "__main__":
    main()
