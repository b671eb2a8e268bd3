"""Baseline for the benchmark: the naive asyncio tarpit, one coroutine + StreamWriter per client.

Usage: python bench/reference_asyncio.py [PORT [DELAY]]   (loopback only; PORT 0 picks one)
"""

import asyncio
import random
import resource
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 2222
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0


async def trap(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await asyncio.sleep(DELAY)
            writer.write(b"%x\r\n" % random.getrandbits(32))
            await writer.drain()
    except OSError:
        pass  # the client left; noticed only now, at a failed write
    finally:
        writer.close()


async def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await asyncio.start_server(trap, "127.0.0.1", PORT)
    print(f"LISTEN 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


asyncio.run(main())
