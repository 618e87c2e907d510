"""The `ortserve` command line: `serve`, `export` and `predict`."""
