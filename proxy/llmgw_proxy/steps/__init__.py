"""The request path's steps, one module each; ``llmgw_proxy.pipeline`` puts them in order.

=================  ===========================================================
Module             Step
=================  ===========================================================
``call``           Not a step: ``Call``, ``Next``, ``Step`` and ``Services``,
                   the types every step shares.
``account``        Metrics, the log line and the server span for every request;
                   a ``ProxyError`` becomes an OpenAI-shaped JSON answer.
``parse``          Content type, body size, JSON, ``model``, ``stream``.
``route``          ``model`` to a configured route.
``cache``          Answers repeated deterministic requests from memory.
``attempts``       The route's targets in order: breaker, rate limit, retry,
                   fallback (``admission`` holds what one try takes).
``forward``        One upstream exchange, relayed to the caller.
=================  ===========================================================
"""
