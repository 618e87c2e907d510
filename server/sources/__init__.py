"""Where model artifacts come from: `model_source` (the `ModelSource` extension point), `local_source` (a directory),
`registry_source` (an MLflow Model Registry: resolve, download, verify, cache), `registry_rest` (the registry over REST,
without the MLflow client), `registry_worker` (the MLflow client in a short-lived child process); `open_source` picks
one for a `--model` URI."""
