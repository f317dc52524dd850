"""Benchmark harness for chatserver: load generator, reference servers, orchestration.

`scripts/bench` is the front door. The modules here each do one job:

- `wsproto`      sans-I/O WebSocket pieces: handshake, masked client frames, frame decoding
- `client`       the cheap raw-asyncio WebSocket client the generator runs by the thousand
- `sioclient`    the same client speaking socket.io / engine.io v4 (for the socketio peer)
- `fanout`, `ping`, `capacity`, `stream`, `storm`  the scenarios, run inside the generator
  process (crossinstance is fanout over two instances); `ratesearch` picks capacity's next rate
- `restarter`    runs the server so that the storm scenario can restart it (SIGUSR1)
- `promtext`     reads the server's /metrics (the storm's loop-lag histogram)
- `generator`    entry point of the generator child process (pinned to CPU 1)
- `cli`, `plan`  options, and which runs they mean (targets, process counts, placements)
- `placement`    which CPU runs what, and why, for runs that cannot keep to "server on CPU 0"
- `backends`     a throwaway PostgreSQL and Redis (tests/services helpers) for postgres-redis
- `servers`      starting, health-checking and killing the processes a run owns
- `targets`      preparing each server (chatserver TOML and admin CLI, socketio, naive, ...)
- `orchestrate`  one run: prepare, start, generate load, attribute CPU to phases
- `procstats`    CPU seconds and RSS of a process tree
- `stats`        percentiles and small numeric helpers
- `report`, `report_capacity`, `report_resilience`, `outcome`  tables, ratios and the
  issues' targets
- `plots`        `--plot`: PNG charts of the runs (matplotlib, Agg)
- `pyspy`        `--profile`: py-spy over the measured window, and its summary
- `naive_server` the "what people write first" reference server for `--baseline`
- `socketio_server` python-socketio AsyncServer + AsyncRedisManager for `--peer socketio`
- `websockets_server` the websockets library's server, `broadcast()` fan-out, for
  `--peer websockets`
- `firehose_server` the calibration server (one pre-built frame written per member, nothing
  else): `--calibrate`, and `--target firehose` to calibrate the generator itself
"""
