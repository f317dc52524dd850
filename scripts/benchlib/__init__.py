"""Benchmark harness for chatserver: load generator, reference server, orchestration.

`scripts/bench` is the front door. The modules here each do one job:

- `wsproto`      sans-I/O WebSocket pieces: handshake, masked client frames, frame decoding
- `client`       the cheap raw-asyncio WebSocket client the generator runs by the thousand
- `fanout`, `ping`  the two scenarios, run inside the generator process
- `generator`    entry point of the generator child process (pinned to CPU 1)
- `servers`      preparing, starting and killing the server under test (pinned to CPU 0)
- `procstats`    CPU seconds and RSS of the server and its children
- `stats`        percentiles and small numeric helpers
- `report`       the human table and the machine-readable JSON
- `naive_server` the "what people write first" reference server for `--baseline`
- `firehose_server` a near-zero-cost server used to calibrate the generator itself
"""
