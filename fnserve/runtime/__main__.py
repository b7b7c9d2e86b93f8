"""``python -m fnserve.runtime FOLDER...``: the runtime's own entry point (see :mod:`.main`)."""

import sys

from fnserve.runtime.main import main

if __name__ == "__main__":  # importing this module (the doctest walk does) serves nothing
    sys.exit(main())
