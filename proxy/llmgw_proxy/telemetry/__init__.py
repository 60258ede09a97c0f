"""What the sidecar tells operators: Prometheus ``metrics``, OpenTelemetry ``tracing``, JSON ``logs``."""
