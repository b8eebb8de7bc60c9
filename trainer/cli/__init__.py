"""The trainer's sub-commands of ``scalefed``: eval, train, trainer serve|info|cancel."""
