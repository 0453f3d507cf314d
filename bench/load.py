#!/usr/bin/env python3
"""A small load generator for bench/instructions.sh when oha is not installed (CI): N POSTs of
BODY to URL over C keep-alive connections (one thread each), every answer read whole and
checked to be 200. Loopback only.

    bench/load.py URL N C BODY
"""

import http.client
import sys
import threading
from urllib.parse import urlsplit


def main() -> None:
    url, total, conns, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "loopback only"
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01",
               "x-api-key": "abk_bench"}
    failures = []
    counts = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        for _ in range(n):
            conn.request("POST", parts.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(response.status)
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"{len(failures)} requests failed: {sorted(set(failures))}")


if __name__ == "__main__":
    main()
