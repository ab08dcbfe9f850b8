"""Getting models: OCI registries, Hugging Face, pulls and pushes."""
