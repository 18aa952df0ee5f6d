"""Run by `test_losing_a_network_link_breaks_no_transfer`, inside a private network namespace.

Talks to a peer over NIXL, deletes the network link named on the command line
(one UCX could have chosen for its connections), then transfers both ways
again. Exits non-zero if any transfer fails.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from conftest import round_trip, start_peer

from transport import Connector


async def main(link: str) -> None:
    peer = start_peer("nixl")
    connector = Connector("nixl")
    try:
        await round_trip(peer, connector, seed=1)
        subprocess.run(["ip", "link", "del", link], check=True)
        for seed in (3, 5):
            await round_trip(peer, connector, seed)
    finally:
        connector.close()
        peer.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
