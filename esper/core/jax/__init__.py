"""JAX twins of the core's numeric functions (optional `jax` extra; only this package imports jax)."""
