"""kata-numa: places Kata Containers VMs on NUMA hardware."""

from kata_numa._native import CpuSet

__all__ = ["CpuSet", "__version__"]
__version__ = "0.1.0"
