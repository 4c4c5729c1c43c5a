"""``metaprune train-pruningnet`` and ``metaprune evaluate``."""
from __future__ import annotations

import time
from pathlib import Path

import click

from pruningnet.errors import UserError

from ..config import config_path as resolve_config
from ..config import load_config
from ..metatrain.config import MetaTrainConfig
from ..store.runs import create_run, open_run, resolve_space
from ..units import format_count
from .common import echo_json, json_option, lock_run, parse_key_values
from .group import cli


@cli.command("train-pruningnet")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Meta-training config: a YAML file or a shipped name (smoke, quickstart, "
                   "cifar10_mobilenet_v2, imagenet_mobilenet_v2, imagenet_resnet50). Without one, the "
                   "built-in defaults are used.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory [default: runs/NAME-TIME].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set train.epochs=2.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option("--download", is_flag=True, help="Allow torchvision to download CIFAR data.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--workers", type=int, help="Data-parallel meta-training on this many Ray Train workers "
              "(DistributedDataParallel: gloo on CPUs, NCCL on GPUs); train.batch_size is the global batch.")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True,
              help="GPUs per worker (with --workers).")
@click.option("--address", metavar="HOST:PORT", help="Ray cluster for --workers (auto: the running one) "
              "[default: a local cluster].")
def train_pruningnet(config_path, run_dir, sets, resume_dir, download, quiet, workers, gpus_per_worker,
                     address) -> None:
    """Meta-train a PruningNet: every batch trains a freshly sampled channel vector."""
    from ..metatrain.loop import check_trainable, meta_train

    if workers is None and (gpus_per_worker or address):
        raise UserError("--gpus-per-worker and --address go with --workers N")
    if workers is not None and not 1 <= workers <= 1024:
        raise UserError(f"--workers {workers} is not accepted; accepted: an integer in [1, 1024]")
    if not 0 <= gpus_per_worker <= 64:  # also refuses nan and inf
        raise UserError(f"--gpus-per-worker {gpus_per_worker} is not accepted; accepted: a number in [0, 64]")

    if resume_dir:
        if config_path or sets or run_dir:
            raise UserError("--resume takes the run's own config; do not pass -c, --set or --run-dir with it")
        run = open_run(resume_dir)
        lock_run(run.path, "train-pruningnet")  # one writer per run, until this command ends
        _check_workers(run.config, workers)
        data = run.load_data()
    else:
        overrides = parse_key_values(sets, "--set")
        if download:
            overrides["data.download"] = True
        path_ = resolve_config(config_path, "", "config file") if config_path else None
        cfg = load_config(MetaTrainConfig, path_, overrides)
        name = path_.stem if path_ else "pruningnet"
        path = Path(run_dir or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (path / "config.yaml").exists():
            raise UserError(f"run directory {str(path)!r} already holds a run; pass --resume {path} "
                            "to continue it or choose another --run-dir")
        data = cfg.data.load(cfg.seed)
        space = resolve_space(cfg, data)
        check_trainable(cfg, data, space)  # everything that can be refused is refused before a file is written
        _check_workers(cfg, workers)
        lock_run(path, "train-pruningnet", create=True)
        if (path / "config.yaml").exists():  # another train-pruningnet created it meanwhile
            raise UserError(f"run directory {str(path)!r} already holds a run; pass --resume {path} "
                            "to continue it or choose another --run-dir")
        run = create_run(path, cfg, space, data)
    click.echo(f"run: {run.path}  space: {run.space.name}  data: {data.name} {data.info}", err=True)
    if workers is not None:
        from ..metatrain.distributed import meta_train_on_ray

        status = meta_train_on_ray(run, workers, gpus_per_worker, address)
    else:
        status = meta_train(run, data, progress=not quiet)
    click.echo(f"PruningNet trained: {status['step']} steps in {status.get('wall_s', 0)} s -> "
               f"{run.path / 'pruningnet.pt'}")


def _check_workers(cfg, workers: int | None) -> None:
    if workers is not None and cfg.train.batch_size % workers:
        raise UserError(f"--workers {workers}: train.batch_size={cfg.train.batch_size} is the global batch, split "
                        f"evenly over the workers; accepted: a batch size that is a multiple of {workers}")


@cli.command()
@click.argument("run_dir", metavar="RUN")
@click.argument("spec_file", metavar="SPEC", required=False)
@click.option("--uniform", type=float, help="Score the uniform-width vector at this ratio of the max (0, 1].")
@click.option("--bn-batches", type=click.IntRange(1, 1_000_000), help="Training batches for BN re-estimation [default: from the run].")
@click.option("--max-images", type=click.IntRange(1, 10**9), help="Score on at most this many search-split images.")
@json_option
def evaluate(run_dir, spec_file, uniform, bn_batches, max_images, as_json) -> None:
    """Proxy accuracy (search split, PruningNet weights, BN re-estimated) of SPEC or a uniform vector."""
    from ..evaluation import evaluate as eval_vector
    from ..store.specfile import load_spec
    from pruningnet.cost import cost_model

    if (spec_file is None) == (uniform is None):
        raise UserError("give exactly one of SPEC or --uniform RATIO")
    run = open_run(run_dir)
    if uniform is not None:
        if not 0 < uniform <= 1:  # also refuses nan
            raise UserError(f"--uniform {uniform} is not accepted; accepted: a ratio in (0, 1]")
        channels = run.space.uniform_channels(uniform)
    else:
        spec = load_spec(spec_file)
        if spec.space.name != run.space.name or spec.space.options != run.space.options:
            diff = [k for k in sorted(set(spec.space.options) | set(run.space.options))
                    if spec.space.options.get(k) != run.space.options.get(k)]
            what = f"space {spec.space.name}, not {run.space.name}" if spec.space.name != run.space.name else \
                ", ".join(f"{k}={spec.space.options.get(k)!r} (run: {run.space.options.get(k)!r})" for k in diff[:3])
            raise UserError(f"spec {spec_file!r} does not fit run {run_dir!r}: {what}; export specs from this run")
        channels = spec.channels
    net = run.load_pruningnet()
    ec = run.config.eval
    settings = {"bn_batches": bn_batches or ec.bn_batches, "max_images": max_images or ec.max_images,
                "batch_size": ec.batch_size, "seed": run.seed}
    res = eval_vector(net, channels, run.load_data(), settings["bn_batches"], settings["max_images"],
                      settings["batch_size"], seed=run.seed)
    res["macs"] = int(cost_model(run.space).macs(channels)[0])
    res["params"] = int(cost_model(run.space).params(channels)[0])
    res["settings"] = settings  # a search may have scored with its own eval settings: say which these are
    if as_json:
        echo_json(res)
    else:
        click.echo(f"top-1 {res['top1']:.4f}  top-5 {res['top5']:.4f}  MACs {format_count(res['macs'])}  "
                   f"params {format_count(res['params'])}  (search split, BN re-estimated on "
                   f"{settings['bn_batches']} batches of {settings['batch_size']}, "
                   f"{settings['max_images'] or 'all'} images, seed {settings['seed']})")
