"""The ``medlens`` command line: thin shells over the library."""
