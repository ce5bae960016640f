"""What crosses between the agent and the collector, and the formats both services speak.

This package is the single place the collector imports from `agent`:
- `batch`: the ingest body (`{"logs": [...], "concurrency": [...]}`) as msgpack or JSON,
  its validation and its encoding;
- `histogram`: the one log-scale latency bucket scheme both sides merge;
- `prometheus`: the text exposition format of `/metrics`;
- `sdnotify`: the systemd notification datagrams;
- `logfmt`: the one-event-per-line `key=value` log format;
- `tomlschema`: TOML config files into frozen dataclasses, errors naming the key path.
Everything here is pure except `sdnotify.notify` and `logfmt.setup`, which touch a
socket or the logging module and do nothing else.
"""
