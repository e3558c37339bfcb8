"""Entry point of the `demakeup` command.

Each area of the tool registers its commands from its own module (``*_cli.py``); heavy imports
(torch, webdataset) happen inside the commands so that ``demakeup --help`` stays instant.
"""

import typer

from launcher import bench_cli, data_cli, demo_cli, infer_cli, models_cli, slurm_cli, synth_cli, train_cli

app = typer.Typer(
    name="demakeup",
    help=(
        "Train de-makeup / super-resolution U-Nets on 1 CPU, 1 GPU or many GPUs.\n\n"
        "Typical flow: `demakeup synth data/` (or bring the course dataset), "
        "`demakeup shard data/` (writes shards/data), `demakeup train p3 --shards shards/data`, "
        "or `demakeup submit p4 --gpus 8 --shards shards/data` on a Slurm cluster. "
        "`demakeup demo` does everything on a small synthetic set."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (synth_cli, data_cli, models_cli, train_cli, infer_cli, slurm_cli, bench_cli, demo_cli):
    module.register(app)

if __name__ == "__main__":
    app()
