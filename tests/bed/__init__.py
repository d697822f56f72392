"""The real-Electrum test bed: a regtest node we control and real ElectrumX servers.

- `tests.bed.node.RegtestNode`: a regtest chain from the real genesis block, with a wallet,
  served over bitcoind's JSON-RPC; tests drive it with `mine`, `pay`, `pay_many`,
  `pay_script`, `make_many_txs`, `reorg`, `evict`, `double_spend`, `set_fee_estimate`.
- `tests.bed.electrumx.ElectrumXServer`: one ElectrumX 2.0 process (TCP, SSL, admin RPC)
  with `start`, `stop`, `kill`, `restart`, `wait_for_height`, `request`.
- `tests.bed.bed`: `wait_for_tip`, `ensure_running` and `Bed` (node + N servers), used by
  the fixtures in tests/conftest.py and by `python -m tests.bed`.

Fixtures: `regtest_node` (session), `electrumx_servers` (the 3 session servers, restarted if
a test stopped one), `start_electrumx(pad_wait=..., **env)` (extra servers for one test),
`wait_for_tip` (`wait_for_tip()` / `await wait_for_tip.wait_async()`), `bed_certs`.

ElectrumX follows the node by polling it every 100 ms: wait for a notification (or
`wait_for_tip`) before asserting what a server reports. It notices a reorg only when the
chain grows, hence `reorg(depth)` mines depth + 1 blocks by default.
"""
