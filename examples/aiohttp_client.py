"""Fetch a URL through proxy64 with aiohttp, reading the proxy from the environment.

    HTTPS_PROXY=http://127.0.0.1:8080 HTTP_PROXY=http://127.0.0.1:8080 \
        python3 examples/aiohttp_client.py https://example.com/
    proxy64 run -- python3 examples/aiohttp_client.py https://example.com/

trust_env=True makes aiohttp honour HTTP_PROXY/HTTPS_PROXY/NO_PROXY (and ~/.netrc).
aiohttp speaks HTTP proxies only (CONNECT for https://); use proxy64's HTTP listener.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp


async def fetch(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(trust_env=True, timeout=timeout) as session,
        session.get(url) as response,
    ):
        body = await response.read()
        print(f"{response.status} {response.reason}: {len(body)} bytes from {url}")
        return 0 if response.status < 400 else 1


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} URL", file=sys.stderr)
        return 2
    return asyncio.run(fetch(sys.argv[1]))


if __name__ == "__main__":
    raise SystemExit(main())
