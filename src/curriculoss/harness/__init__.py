"""The training harness: everything the `curriculoss` command runs, built on the library.

- `data`: the data readers, one module per format, their registry `READERS` and `load`
- `models`: the networks (`--model`), their registry `MODEL_BUILDERS` and default learning rates
- `methods`: each training method (CE, SuperLoss, data parameters, IMAE, ...) as a loss step, their
  registry `METHODS`, and `MethodOptions` (the methods' defaults, read from the library)
- `augment`: batch-wise, seeded augmentation on the device
- `config`: `TrainConfig` (a run's defaults), its checks and its TOML form
- `train`: one run, its loop in named steps; `epoch`: one epoch and its evaluation; `checkpoint`,
  `runfolder`, `schedule`, `devices`, `progress`: what the loop writes, reads and runs on
- `divergence`: the collapse rule; `holdout`: the noisy hold-out split that selects an epoch;
  `runlock`: one run per folder
- `bench`: a grid of runs; `reproduce` and `presets`: the papers' claims; `plots`: the figures
- `cli`: the command line, with `arguments` (its options, built from the defaults), `commands` (what
  each command does) and `configfile` (`--config FILE`)

The public harness API, for scripts, tests and benchmarks:

- `arguments.build_config(args, method, rate, seed)`: the `TrainConfig` of parsed options
  (`cli.build_parser().parse_args([...])`)
- `train.train(cfg, run_dir)`: one run; `train.train_or_reuse(cfg, folder)`: a finished run's results,
  or the run trained (or resumed)
- `train.prepare_data(cfg)`, `train.build_checked_model(cfg, data)`: the data and network of a run
  (the whole training set: `holdout.split_holdout(cfg, data, noisy)` makes a run's hold-out split)
- `devices.end_distributed(finished)`: the ordered teardown of a process group
- `reproduce.validation_split(cfg, folder, fraction)`: a training set split for hyper-parameter selection

The library (`curriculoss` and its loss, noise and flagging modules) never imports this package.
Nothing is imported here: `import curriculoss.harness` stays cheap.
"""
