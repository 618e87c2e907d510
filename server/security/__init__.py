"""Who may call: `tls_credentials` (TLS and mutual TLS, reloaded on change) and `bearer_tokens` (token files and
their per-model grants), shared by every protocol the server speaks."""
