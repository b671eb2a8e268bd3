"""The gauntlet's baseline: the endlessh article's endless tarpits, one protocol per run.

ssh:  a random line (hex, at most 32 bytes with CRLF) every 10 s, never a version string;
http: ``HTTP/1.1 200 OK`` at once, then a random ``X-…: …`` header line every 5 s;
smtp: a random ``220-`` line every 5 s, never the final ``220 `` line.

The article gives 10 s (SSH) and 5 s (HTTP); it leaves SMTP as an exercise, so SMTP takes
the HTTP delay. Each run serves one protocol on loopback and prints ``LISTEN 127.0.0.1:PORT``.

Usage: python bench/reference_endless.py --proto ssh|http|smtp [--port 0] [--delay S]
"""

import argparse
import asyncio
import random

DELAYS = {"ssh": 10.0, "http": 5.0, "smtp": 5.0}


def line(proto: str) -> bytes:
    """One more line that keeps the client waiting for the end that never comes."""
    r = random.getrandbits
    if proto == "ssh":
        return b"%x\r\n" % r(32)
    if proto == "http":
        return b"X-%x: %x\r\n" % (r(32), r(32))
    return b"220-%x\r\n" % r(32)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto", choices=sorted(DELAYS), required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, help="seconds between lines (the article's)")
    args = ap.parse_args()
    delay = DELAYS[args.proto] if args.delay is None else args.delay

    async def trap(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if args.proto == "http":
                writer.write(b"HTTP/1.1 200 OK\r\n")
            while True:
                await asyncio.sleep(delay)
                writer.write(line(args.proto))
                await writer.drain()
        except OSError:
            pass  # the client left; noticed at a failed write, as in the article
        finally:
            writer.close()

    server = await asyncio.start_server(trap, "127.0.0.1", args.port)
    print(f"LISTEN 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
