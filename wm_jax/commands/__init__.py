"""The `wm-jax` subcommands, one module each: ``register(sub)`` adds the parser, ``run(args, overrides)``
does the work (the rest of the package holds the library)."""
