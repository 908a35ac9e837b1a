//! Native FTS client (one attempt = one connection). Filled in by the probe-client work.
