"""What crosses between the agent and the collector, and the formats both services speak.

This package is the single place the collector imports from `agent`:
- `batch`: the ingest body (`{"logs": [...], "concurrency": [...]}`) as msgpack or JSON,
  its validation and its encoding;
- `histogram`: the one log-scale latency bucket scheme both sides merge;
- `prometheus`: the text exposition format of `/metrics`;
- `sdnotify`: the systemd notification datagrams;
- `logfmt`: the one-event-per-line `key=value` log format;
- `tomlschema`: TOML config files into frozen dataclasses, errors naming the key path;
- `gcsettings`: the garbage-collector settings both long-running services use;
- `eventloop`: uvloop when installed, else asyncio's loop, for both services.
Everything here is pure except `sdnotify.notify`, `logfmt.setup` and
`gcsettings.settle`, which touch a socket, the logging module or the interpreter's
collector and do nothing else.
"""
