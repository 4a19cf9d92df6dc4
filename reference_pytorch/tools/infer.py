"""`python -m reference_pytorch.tools.infer --help`: infer RT-DETR with the PyTorch reference."""
from rtdetr_common.cli import infer_main, run_tool

from ..engine import Engine

if __name__ == "__main__":
    run_tool(infer_main, Engine)
