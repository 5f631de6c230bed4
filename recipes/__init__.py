"""zoo's training recipes: `zoo train <name> [--field value ...]` (or `python -m
recipes.<name>` in a source checkout).

Each recipe module has a frozen `Config` dataclass extending `BaseConfig` (its defaults are
the experiment's settings; numeric fields carry their bounds and run-steering fields their
mark in field metadata, see `_config`), `train(config, workdir=None)`, which goes through
the one run skeleton `_run.run_recipe` and returns the trained model (or the results), and
`main(argv)`, the tyro command line (`_cli`). Recipes: `mnist_mlp`, `mnist_cnn`, `ou_gru`,
`linear_regression` and `finetune`.
"""
