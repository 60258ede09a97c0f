"""What the sidecar serves and keeps between requests, with no sockets and no metrics.

``state`` holds the snapshot being served and each provider's limiter and
breaker; ``reload`` loads the config and key files and swaps the snapshot when
they change; ``keys`` reads the provider keys and keeps them out of reprs.
"""
