"""``python -m glmdata``: the ``glmdata`` command."""

from glmdata.cli import main

if __name__ == "__main__":
    main()
