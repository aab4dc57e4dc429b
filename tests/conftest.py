"""Shared pytest setup: no test may touch the network or hang on it."""

import os

# Set before anything imports huggingface_hub / transformers / wandb: a hub lookup otherwise retries for ~140 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_sessionfinish(session, exitstatus):
    # A run that collected nothing must never look green (pytest already exits 5; make it loud too).
    if session.testscollected == 0:
        print("\nERROR: no tests were collected: refusing to report success")
        session.exitstatus = 5
