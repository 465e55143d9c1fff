"""``python -m dsharp``: the ``dsharp`` command, for an environment whose scripts folder is
not on PATH (or to pick the interpreter explicitly)."""

from dsharp.cli import main

if __name__ == "__main__":
    main()
