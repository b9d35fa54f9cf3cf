"""``fakescan serve``: the HTTP API and review page over the results database (torch-free).

``app`` builds the application from settings; ``routes`` is the JSON API under ``/api/v1``;
``pages`` the server-rendered review page (``templates/``, ``static/``); ``queries`` what both
ask of ``fakescan.db``; ``auth`` the bearer tokens; ``images`` thumbnails through the worker's
decoder; ``overlay`` explanation maps computed by a worker-role child process.
"""
