from metaprune.cli.main import run

run()
