"""`python -m models.libffm`: the learner's command line."""

from models.libffm import main

if __name__ == "__main__":
    main()
