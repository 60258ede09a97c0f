"""What differs between the API families the sidecar serves natively (see ``config.ApiFamily``).

=============  ================================================================
Module         Holds
=============  ================================================================
``usage``      A provider's ``usage`` object in the one shape the limiter,
               metrics and logs read (``prompt_tokens``, ``completion_tokens``).
``events``     Typed event streams (Responses, Anthropic Messages): their usage,
               the response id and the text, read on the way through.
``shapes``     The errors the sidecar itself produces, in each family's shape,
               as a JSON body or an in-band stream event.
=============  ================================================================

Nothing here does I/O: the steps call these with what they received.
"""
