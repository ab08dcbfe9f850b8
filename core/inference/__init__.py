"""Running models: the llama-server binary, its processes, and the pool that owns them."""
