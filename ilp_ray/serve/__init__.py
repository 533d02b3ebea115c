"""Ray Serve scoring endpoint: ``build_app(args)`` for ``serve run``/``serve deploy``.

Import ``ilp_ray.serve.app`` for the application; this package itself imports nothing heavy.
"""
