"""`python -m reference_pytorch.tools.train --help`: train RT-DETR with the PyTorch reference."""
from rtdetr_common.cli import train_main, run_tool

from ..engine import Engine

if __name__ == "__main__":
    run_tool(train_main, Engine)
