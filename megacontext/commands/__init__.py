"""One module per `megacontext` command: each provides `add_arguments(parser)` and
`run(args) -> int`; megacontext/cli.py lists them."""
