"""Remote caches a team and its CI share: config, the store protocol, its fsspec backend, push/pull, upkeep."""
