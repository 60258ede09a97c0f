"""The upstream transports: the behaviour every ``upstream.Transport`` implementation shares."""
