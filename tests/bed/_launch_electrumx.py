"""Run ElectrumX's server main, optionally with a shorter send-buffer wait.

ElectrumX 2.0 pads TCP/SSL messages and holds small ones for up to
`PaddedRSTransport.WAIT_FOR_BUFFER_GROWTH_SECONDS` (1 s) to resist traffic analysis; on
loopback tests that only adds latency, so the bed lowers it unless asked for the stock value.

Usage: python _launch_electrumx.py WAIT_SECONDS|stock   (configuration comes from the env)
"""

import sys

from electrumx.cli.electrumx_server import main
from electrumx.server.transport import PaddedRSTransport

if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1] != "stock":
        PaddedRSTransport.WAIT_FOR_BUFFER_GROWTH_SECONDS = float(sys.argv[1])
    main()
