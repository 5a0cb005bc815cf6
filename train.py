"""Train one model (or a Hydra grid with -m). See README.md; config lives in conf/."""

from hightpr.cli.train import run

if __name__ == "__main__":
    run()
