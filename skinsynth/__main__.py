"""`python -m skinsynth …` and `accelerate launch -m skinsynth …`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
