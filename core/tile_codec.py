"""``python -m core.tile_codec``: the command line (``core.cli``), under the name users type."""

from .cli import main

if __name__ == "__main__":
    from .errors import exit_now

    exit_now(main())
