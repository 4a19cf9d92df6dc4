"""`python -m reference_pytorch.tools.eval --help`: eval RT-DETR with the PyTorch reference."""
from rtdetr_common.cli import eval_main, run_tool

from ..engine import Engine

if __name__ == "__main__":
    run_tool(eval_main, Engine)
