"""HTTP API and web page (`promptseg serve`)."""
