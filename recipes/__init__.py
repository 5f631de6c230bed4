"""zoo's training recipes: `python -m recipes.<name>` or `zoo train <name>`.

Each recipe module has a frozen `Config` dataclass (its defaults are the experiment's
settings), `train(config, workdir)` and `main(argv)`.
"""
