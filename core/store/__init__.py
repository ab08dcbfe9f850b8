"""The local model store, in Docker Model Runner's on-disk format."""
